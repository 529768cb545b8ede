"""The once-for-all estimator: an elastic supernet trained by progressive shrinking, then
every arch scored with its inherited weights.

It is the ``supernet`` estimator (:class:`~nasforge.estimators.supernet.SupernetEstimator`:
checkpoints after every epoch in ``RUN_DIR/supernet/``, exact resumption, batch-norm
recalibration before each score, ``val_acc`` / ``val_loss`` / ``params`` / ``flops`` metrics,
:func:`~nasforge.estimators.supernet.inherited_child` for fine-tuning) with its training
replaced by :class:`~nasforge.oneshot.progressive_shrinking.ShrinkingTrainer`: OFA's stages (Cai et al.,
ICLR 2020), BigNAS' sandwich steps and in-place distillation. Any discrete strategy searches on
it, e.g. under a FLOPs budget::

    space: {type: ofa, stage_widths: [16, 24, 32, 48, 64], feature_width: 256}
    strategy: {type: constrained_evolution, budget: {metric: flops, max: 2.0e6}}
    estimator:
      type: ofa
      stages:
        - {elastic: none, epochs: 3}
        - {elastic: kernel, epochs: 2}
        - {elastic: depth, epochs: 2}
        - {elastic: width, epochs: 2}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import nn

from nasforge.core.capabilities import Capability
from nasforge.core.estimator import Context
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace
from nasforge.estimators.supernet import SupernetEstimator
from nasforge.nn.mixed import Supernet
from nasforge.oneshot.progressive_shrinking import (
    OFA_STAGES,
    ProgressiveShrinking,
    ShrinkingTrainer,
    ShrinkStage,
    StagePlan,
)
from nasforge.oneshot.trainer import SupernetTrainer
from nasforge.tasks.training import GradClip, LearningRate, Momentum, WeightDecay

__all__ = ["OFAEstimator"]


@register("estimator", "ofa", tags=("one-shot", "elastic"))
class OFAEstimator(SupernetEstimator):
    """Once-for-all: train an elastic supernet by progressive shrinking, score archs on it.

    Defaults: OFA's stages scaled to 11 epochs (see
    :data:`~nasforge.oneshot.progressive_shrinking.OFA_STAGES`), two random subnets per sandwich (BigNAS),
    distillation weight 1 (OFA), SGD with Nesterov momentum and OFA's weight decay 3e-5, and
    batch norm recalibrated on 32 minibatches (2,048 images at batch 64, OFA's 2,000) before
    each score.

    Args:
        stages: the progressive-shrinking stages, in order (``elastic``, ``epochs``, optional
            ``values`` and ``lr_scale``; see :class:`~nasforge.oneshot.progressive_shrinking.ShrinkStage`).
        n_random: random subnets per step besides the largest and the smallest.
        kd_ratio: weight of the distillation loss from the largest subnet (0: labels only).
        batch_size, lr, momentum, nesterov, weight_decay, grad_clip: SGD, as the supernet
            estimator; each stage's cosine peaks at ``lr * lr_scale``.
        bn_batches: training minibatches recalibrating batch norm before each score.
        eval_batches: validation minibatches per score; 0 for the whole split.
        space: the space (filled in by the runner); it must be elastic (``ofa``).
    """

    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.SUPERNET, Capability.ELASTIC})

    #: Tiny settings for the conformance suite (nasforge.testing.suites).
    conformance_options: ClassVar[dict[str, Any]] = {"stages": [{"elastic": "none", "epochs": 1}], "batch_size": 16, "bn_batches": 1}
    #: An elastic space small enough for the conformance run.
    conformance_space: ClassVar[dict[str, Any]] = {"type": "ofa", "stem_width": 8, "stage_widths": [8, 8, 16, 16, 16], "feature_width": 16}

    def __init__(
        self,
        stages: Sequence[ShrinkStage] = OFA_STAGES,
        n_random: NonNegativeInt = 2,
        kd_ratio: NonNegativeFloat = 1.0,
        batch_size: PositiveInt = 64,
        lr: LearningRate = 0.05,
        momentum: Momentum = 0.9,
        nesterov: bool = True,
        weight_decay: WeightDecay = 3e-5,
        grad_clip: GradClip | None = 5.0,
        bn_batches: NonNegativeInt = 32,
        eval_batches: NonNegativeInt = 0,
        space: SearchSpace | None = None,
    ) -> None:
        self.stages = tuple(stages)
        super().__init__(
            rule="spos",
            epochs=sum(stage.epochs for stage in self.stages),
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            grad_clip=grad_clip,
            bn_batches=bn_batches,
            eval_batches=eval_batches,
            space=space,
        )
        self.rule = ProgressiveShrinking(n_random)
        self.n_random = n_random
        self.kd_ratio = kd_ratio
        if space is not None:
            StagePlan(self.stages, space)  # a bad schedule or a space that is not elastic fails here

    def fingerprint(self, supernet: nn.Module) -> dict[str, Any]:
        return {
            **super().fingerprint(supernet),
            "stages": [stage.model_dump() for stage in self.stages],
            "n_random": self.n_random,
            "kd_ratio": self.kd_ratio,
        }

    def make_trainer(self, supernet: Supernet, ctx: Context, *, seed: int) -> SupernetTrainer:
        """Training by progressive shrinking (the checkpoints and scoring are the supernet estimator's)."""
        return ShrinkingTrainer(
            supernet,
            ctx.space,
            self.settings,
            plan=StagePlan(self.stages, ctx.space),
            rule=self.rule,  # type: ignore[arg-type]
            kd_ratio=self.kd_ratio,
            seed=seed,
            device=ctx.device,
        )
