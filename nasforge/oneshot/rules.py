"""Training rules of one-shot NAS: which paths of a supernet each optimiser step trains.

A rule answers one question, once per optimiser step: *which archs share this minibatch?* The
gradients of all of them are summed before the step. The rules also carry the training recipe
their paper used, scaled to the small CPU settings nasforge runs by default, as
:class:`RuleDefaults` (the supernet estimator falls back on them for every option left unset).

- ``spos``: uniform single path (Guo et al. 2020, "Single Path One-Shot Neural Architecture
  Search with Uniform Sampling", ECCV): one path per step, each choice uniform.
- ``fairnas``: strict fairness (Chu et al. 2021, "FairNAS: Rethinking Evaluation Fairness of
  Weight Sharing Neural Architecture Search", ICCV): ``m`` paths per step on the same minibatch,
  built from one random permutation of every choice's candidates, so every candidate of every
  choice is trained exactly once per step.
- ``rsps``: random search with parameter sharing (Li & Talwalkar 2019, "Random Search and
  Reproducibility for Neural Architecture Search", UAI): sampling as SPOS, with the recipe
  NAS-Bench-201 used for it and archs scored as Li & Talwalkar did, on 10 validation minibatches
  with the batch-norm statistics of training (no recalibration).
- ``enas``: ENAS (Pham et al. 2018, "Efficient Neural Architecture Search via Parameter
  Sharing", ICML): the shared weights are trained on the archs the controller asks for, inside
  the search loop (see :class:`~nasforge.estimators.supernet.SupernetEstimator`); its optional
  warm-up epochs sample uniformly.

Rules are plain classes registered as components of kind ``rule`` (``@register("rule", NAME)``,
so a plugin can add one) and built by name with :func:`get_rule`; they hold no state, and all
their randomness comes from the generator they are handed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.component import Component
from nasforge.core.errors import ConfigError
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace

__all__ = [
    "RuleDefaults",
    "TrainingRule",
    "UniformSinglePath",
    "StrictFairness",
    "RandomSearchSharing",
    "ControllerPaths",
    "get_rule",
]


@dataclass(frozen=True)
class RuleDefaults:
    """A rule's training recipe (every field an option of the supernet estimator).

    Attributes:
        epochs: passes over the training set before any arch is estimated.
        batch_size: samples per minibatch.
        lr: peak learning rate of SGD (cosine-decayed to 0 over ``epochs``).
        weight_decay: L2 penalty of SGD.
        bn_batches: training minibatches that recalibrate batch norm before each estimate.
        eval_batches: validation minibatches each arch is scored on (None: the whole split).
        nesterov: Nesterov momentum.
        grad_clip: the gradient's global norm is clipped to this; None: no clipping.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    bn_batches: int
    eval_batches: int | None
    nesterov: bool = True
    grad_clip: float | None = 5.0


class TrainingRule(Component, ABC):
    """Base of the rules: the archs trained together in one optimiser step."""

    #: The name configs use (``rule: spos``); the name it is registered under.
    name: ClassVar[str] = ""
    #: The recipe used where the estimator's options leave a value unset.
    defaults: ClassVar[RuleDefaults]
    #: True when the archs the strategy asks for are trained inside ``estimate`` (ENAS).
    trains_asked_archs: ClassVar[bool] = False

    @abstractmethod
    def paths(self, space: SearchSpace, rng: np.random.Generator) -> list[Arch]:
        """The archs of one optimiser step; their gradients on one minibatch are summed."""


@register("rule", "spos")
class UniformSinglePath(TrainingRule):
    """SPOS: one path per step, drawn uniformly (``space.sample``, so the space's constraints hold).

    Guo et al. trained on ImageNet with SGD (momentum 0.9, lr 0.5 decayed linearly, weight decay
    4e-5, batch 1024) and recalibrated batch norm on 20,000 training images before scoring each
    arch. The defaults here are the CPU-sized equivalent: lr 0.05, cosine, batch 64; as the
    official code (``src/Supernet/train.py`` of github.com/megvii-model/SinglePathOneShot:
    ``torch.optim.SGD(get_parameters(model), lr, momentum=args.momentum,
    weight_decay=args.weight_decay)``, and no clipping anywhere in its training step), plain
    momentum without Nesterov and no gradient clipping. Its blocks (``src/Supernet/blocks.py``)
    use batch norm with ``affine=False``, as does the supernet estimator's ``bn_affine`` default.
    """

    name = "spos"
    defaults = RuleDefaults(
        epochs=10, batch_size=64, lr=0.05, weight_decay=4e-5, bn_batches=10, eval_batches=None, nesterov=False, grad_clip=None
    )

    def paths(self, space: SearchSpace, rng: np.random.Generator) -> list[Arch]:
        return [space.sample(rng)]


@register("rule", "fairnas")
class StrictFairness(TrainingRule):
    """FairNAS: ``m`` paths per step such that every candidate of every choice is used exactly once.

    ``m`` is the largest number of candidates of any choice; each choice draws a random
    permutation of its candidates and path ``k`` takes entry ``k``. A choice with fewer
    candidates repeats fresh permutations, so its candidates are each used at least once (the
    paper's spaces have equal counts, where "exactly once" holds for every choice). Paths that
    break a constraint of the space (``is_valid``: a latency bound, say) are dropped, so fairness
    then holds among the allowed paths only; a step whose every path breaks one trains one
    uniformly sampled valid path instead.

    One step costs ``m`` forward and backward passes, so an epoch costs ``m`` SPOS epochs; the
    default of 2 epochs trains as many paths as SPOS's default 10 (for NB201's 5 ops). The rest
    of the recipe is SPOS's, except that it keeps Nesterov momentum and clipping at 5 (not
    checked against FairNAS' code).
    """

    name = "fairnas"
    defaults = RuleDefaults(epochs=2, batch_size=64, lr=0.05, weight_decay=4e-5, bn_batches=10, eval_batches=None)

    def paths(self, space: SearchSpace, rng: np.random.Generator) -> list[Arch]:
        choices = list(space.choices().values())
        m = max(len(choice) for choice in choices)
        columns = {}
        for choice in choices:
            order: list[int] = []
            while len(order) < m:
                order.extend(int(i) for i in rng.permutation(len(choice)))
            columns[choice.name] = [choice.candidates[i] for i in order[:m]]
        paths = [Arch({name: column[k] for name, column in columns.items()}) for k in range(m)]
        return [path for path in paths if space.is_valid(path)] or [space.sample(rng)]


@register("rule", "rsps")
class RandomSearchSharing(UniformSinglePath):
    """RSPS: SPOS's sampling, NAS-Bench-201's recipe for it, Li & Talwalkar's cheap scoring.

    NAS-Bench-201 trained RSPS with SGD (lr 0.025 cosine, Nesterov momentum 0.9, weight decay
    5e-4, batch 64, gradient clipping at 5). Li & Talwalkar scored each of 1,000 sampled archs
    on 10 validation minibatches, then the best 10 on the whole split; here every arch gets the
    10 minibatches (the search strategy decides which archs to look at).

    Batch norm: the running statistics left by training on random paths belong to no single
    path, so scoring with them measures the mismatch more than the arch. NAS-Bench-201 makes BN
    tracking a flag (``--track_running_stats`` of ``exps/NAS-Bench-201-algos/RANDOM-NAS.py``,
    ``scripts-search/NAS-Bench-201-algos/RANDOM-NAS.sh``'s "BN-tracking-status" argument, in
    github.com/D-X-Y/AutoDL-Projects; off, every minibatch is normalised by its own statistics at
    evaluation). Here each arch's statistics are recalibrated on 10 training minibatches of its
    path before scoring, by default; ``bn_batches: 0`` keeps training's statistics, as before.
    """

    name = "rsps"
    defaults = RuleDefaults(epochs=10, batch_size=64, lr=0.025, weight_decay=5e-4, bn_batches=10, eval_batches=10)


@register("rule", "enas")
class ControllerPaths(UniformSinglePath):
    """ENAS: the shared weights train on the archs the strategy asks for, inside ``estimate``.

    NAS-Bench-201's ENAS trained the shared weights with SGD (lr 0.05, Nesterov momentum 0.9,
    weight decay 2.5e-4, batch 128, gradient clipping at 5). No warm-up by default; a warm-up
    (``epochs > 0``) samples uniformly, as SPOS.
    """

    name = "enas"
    defaults = RuleDefaults(epochs=0, batch_size=128, lr=0.05, weight_decay=2.5e-4, bn_batches=2, eval_batches=1)
    trains_asked_archs = True


def get_rule(name: str) -> TrainingRule:
    """The registered rule called ``name``.

    Raises:
        ConfigError: an unknown name (the message lists the registered rules), or a registered
            target that does not build a :class:`TrainingRule`.
    """
    rule = registry.create("rule", name, where=f"rule {name!r}")
    if not isinstance(rule, TrainingRule):
        raise ConfigError(f"rule {name!r} built a {type(rule).__name__}, not a TrainingRule")
    return rule
