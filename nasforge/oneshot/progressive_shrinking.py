"""Training an elastic supernet: progressive shrinking, sandwich sampling, in-place distillation.

Once-for-all (Cai et al. 2020, "Once-for-All: Train One Network and Specialize it for Efficient
Deployment", ICLR) trains the largest network first and then opens the elastic dimensions one
after the other, each phase fine-tuning all the subnets opened so far: kernel size, then depth
(depths 4, 3, then 4, 3, 2), then width (expansion 6, 4, then 6, 4, 3). Before a width phase
the channels are sorted by importance (:func:`~nasforge.nn.elastic.reorganize_channels`),
keeping the channels of the widths already trained in place. Each phase is a separate run in
OFA, with its own optimiser and cosine learning rate; here each :class:`ShrinkStage` starts with
fresh momentum and its own cosine, peaking at the estimator's ``lr`` times ``lr_scale``.

Within a stage every optimiser step trains a *sandwich* (Yu et al. 2020, "BigNAS: Scaling Up
Neural Architecture Search with Big Single-Stage Models", ECCV): the largest subnet, the smallest
and ``n_random`` random ones on the same minibatch, the largest on the labels and the others on
the labels plus, weighted by ``kd_ratio``, the cross-entropy against the largest subnet's
predictions (in-place knowledge distillation; OFA distils from the full network with the same
loss and ``kd_ratio`` 1; :func:`distillation_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt
from torch import Tensor

from nasforge.core.arch import Arch, Value
from nasforge.core.capabilities import Capability, require
from nasforge.core.errors import ConfigError
from nasforge.core.seeding import derive_seed
from nasforge.core.space import SearchSpace
from nasforge.nn.elastic import Kind, reorganize_channels
from nasforge.nn.mixed import Supernet
from nasforge.oneshot.rules import RuleDefaults, TrainingRule
from nasforge.oneshot.trainer import SupernetSettings, SupernetTrainer
from nasforge.tasks.criteria import kd_loss

__all__ = [
    "ShrinkStage",
    "OFA_STAGES",
    "StagePlan",
    "ProgressiveShrinking",
    "ShrinkingTrainer",
    "elastic_kinds_of",
    "distillation_loss",
]

#: The order in which progressive shrinking opens the elastic dimensions.
SHRINK_ORDER: tuple[str, ...] = ("none", "kernel", "depth", "width")


class ShrinkStage(BaseModel):
    """One phase of progressive shrinking.

    Attributes:
        elastic: the dimension this stage opens (``none``: the largest network alone; the
            dimensions opened by earlier stages stay open).
        epochs: its length.
        values: how many of the dimension's candidates are open, largest first (None: all),
            e.g. 2 for OFA's first depth phase (depths 4 and 3).
        lr_scale: the stage's peak learning rate as a share of the estimator's ``lr``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    elastic: Literal["none", "kernel", "depth", "width"]
    epochs: PositiveInt
    values: Annotated[int, Field(ge=2)] | None = None
    lr_scale: PositiveFloat = 1.0


#: OFA's phases, with their epochs scaled from 180 (full) : 120 (kernel) : 25 + 120 (depth) :
#: 25 + 120 (width) to 11 in all, and their learning rates relative to the kernel phase's
#: (3e-2; depth and width: 2.5e-3 in the first sub-phase, 7.5e-3 in the second).
OFA_STAGES: tuple[ShrinkStage, ...] = (
    ShrinkStage(elastic="none", epochs=3),
    ShrinkStage(elastic="kernel", epochs=2),
    ShrinkStage(elastic="depth", epochs=1, values=2, lr_scale=1 / 12),
    ShrinkStage(elastic="depth", epochs=2, lr_scale=0.25),
    ShrinkStage(elastic="width", epochs=1, values=2, lr_scale=1 / 12),
    ShrinkStage(elastic="width", epochs=2, lr_scale=0.25),
)


def elastic_kinds_of(space: SearchSpace) -> dict[str, Kind]:
    """``space.elastic_kinds()``: which elastic dimension each choice is; ConfigError without it."""
    require(space, Capability.ELASTIC, by="progressive shrinking")
    return dict(space.elastic_kinds())  # type: ignore[attr-defined]


def _descending(values: Sequence[Value]) -> list[Value]:
    return sorted(values, reverse=True)  # type: ignore[type-var]


class StagePlan:
    """The stages laid out over epochs, and the candidates each one opens.

    Args:
        stages: the stages in order; each opens a dimension no earlier than the previous one's
            (``none`` < ``kernel`` < ``depth`` < ``width``), a dimension re-opened only with
            more values.
        space: the elastic space (its choices and :meth:`elastic_kinds`).
    """

    def __init__(self, stages: Sequence[ShrinkStage], space: SearchSpace) -> None:
        if not stages:
            raise ConfigError("progressive shrinking needs at least one stage")
        for before, after in zip(stages, stages[1:]):
            backwards = SHRINK_ORDER.index(after.elastic) < SHRINK_ORDER.index(before.elastic)
            opens_more = before.values is not None and (after.values is None or after.values > before.values)
            if backwards or (after.elastic == before.elastic and not opens_more):
                raise ConfigError(
                    f"progressive shrinking stages must open {' -> '.join(SHRINK_ORDER)} in that order, each dimension "
                    f"with more values than before; got {before.elastic} ({before.values or 'all'} values) then "
                    f"{after.elastic} ({after.values or 'all'} values)"
                )
        self.stages = tuple(stages)
        self.starts = [sum(s.epochs for s in stages[:i]) for i in range(len(stages))]
        self.epochs = sum(s.epochs for s in stages)
        self.kinds = elastic_kinds_of(space)
        self.choices = space.choices()

    def stage_at(self, epoch: int) -> int:
        """Index of the stage that epoch ``epoch`` (from 0) belongs to (the last one beyond)."""
        return max(i for i, start in enumerate(self.starts) if start <= epoch)

    def opened(self, index: int) -> dict[str, list[Value]]:
        """Each choice's candidates open in stage ``index``, largest first."""
        counts: dict[str, int | None] = {}
        for stage in self.stages[: index + 1]:
            if stage.elastic != "none":
                counts[stage.elastic] = stage.values
        allowed = {}
        for name, choice in self.choices.items():
            ordered = _descending(choice.candidates)
            kind = self.kinds.get(name)
            allowed[name] = ordered[: counts[kind] or len(ordered)] if kind in counts else ordered[:1]
        return allowed

    def trained_widths(self, index: int) -> dict[str, list[Value]]:
        """Width values already trained before stage ``index`` (kept in place when sorting)."""
        if index == 0:
            return {}
        before = self.opened(index - 1)
        return {name: values[1:] for name, values in before.items() if self.kinds.get(name) == "width"}


class ProgressiveShrinking(TrainingRule):
    """The sandwich rule of an elastic space: the largest, the smallest and ``n_random`` random
    subnets per step (:meth:`paths`, every dimension open; :meth:`sandwich` for one stage)."""

    name = "ofa"
    defaults: ClassVar[RuleDefaults] = RuleDefaults(
        epochs=sum(s.epochs for s in OFA_STAGES), batch_size=64, lr=0.05, weight_decay=3e-5, bn_batches=32, eval_batches=None
    )

    def __init__(self, n_random: int = 2) -> None:
        self.n_random = n_random

    def paths(self, space: SearchSpace, rng: np.random.Generator) -> list[Arch]:
        allowed = {name: _descending(choice.candidates) for name, choice in space.choices().items()}
        return self.sandwich(allowed, rng)

    def sandwich(self, allowed: Mapping[str, Sequence[Value]], rng: np.random.Generator) -> list[Arch]:
        """The largest and smallest arch over ``allowed`` (candidates, largest first) and
        ``n_random`` uniform draws; only the largest when nothing is elastic."""
        largest = Arch({name: values[0] for name, values in allowed.items()})
        smallest = Arch({name: values[-1] for name, values in allowed.items()})
        if largest == smallest:
            return [largest]
        randoms = [Arch({n: v[int(rng.integers(len(v)))] for n, v in allowed.items()}) for _ in range(self.n_random)]
        return [largest, smallest, *randoms]


def distillation_loss(logits: Tensor, teacher_logits: Tensor, labels: Tensor, kd_ratio: float) -> Tensor:
    """OFA's loss for a distilled subnet: cross-entropy on the labels plus ``kd_ratio`` times the
    cross-entropy against the teacher's softmax (its KL divergence up to a constant), written with
    :func:`~nasforge.tasks.criteria.kd_loss` at temperature 1."""
    alpha = kd_ratio / (1.0 + kd_ratio)
    return (1.0 + kd_ratio) * kd_loss(logits, teacher_logits, labels, temperature=1.0, alpha=alpha)


class ShrinkingTrainer(SupernetTrainer):
    """A :class:`SupernetTrainer` that trains by progressive shrinking with sandwich steps.

    Everything is a function of the seed and the position in the stream, as for the base
    trainer, so its ``state_dict`` (weights, optimiser, counters) still resumes exactly; the
    channel sorting and the optimiser reset at a stage's start happen again on resuming there.

    Args:
        supernet, space, settings, seed, device: as :class:`SupernetTrainer`
            (``settings.epochs`` must be the stages' total).
        plan: the stages.
        rule: the sandwich sampler.
        kd_ratio: weight of the distillation loss for all but the largest subnet (0: none).
    """

    def __init__(
        self,
        supernet: Supernet,
        space: SearchSpace,
        settings: SupernetSettings,
        *,
        plan: StagePlan,
        rule: ProgressiveShrinking,
        kd_ratio: float,
        seed: int,
        device: str = "cpu",
    ) -> None:
        if settings.epochs != plan.epochs:
            raise ValueError(f"settings.epochs={settings.epochs} differs from the stages' {plan.epochs} epochs")
        # Channels-last runs depthwise convolutions two to three times faster on CPU.
        super().__init__(supernet.to(memory_format=torch.channels_last), space, rule, settings, seed=seed, device=device)
        self.plan = plan
        self.sampler = rule
        self.kd_ratio = kd_ratio

    def learning_rate(self, n_train: int) -> float:
        """Cosine from the stage's peak to 0 over the stage."""
        per_epoch = self.steps_per_epoch(n_train)
        index = self.plan.stage_at(self.step // per_epoch)
        stage = self.plan.stages[index]
        position = self.step - self.plan.starts[index] * per_epoch
        total = stage.epochs * per_epoch
        return 0.5 * self.settings.lr * stage.lr_scale * (1.0 + math.cos(math.pi * min(position, total) / total))

    def backward_paths(self, images: Tensor, labels: Tensor, paths: Sequence[Arch]) -> float:
        """A sandwich's gradients: the first path (the largest) on the labels, teaching the others."""
        teacher: Tensor | None = None
        loss_sum = 0.0
        for arch in paths:
            self.supernet.activate(arch)
            logits = self.supernet(images)
            if teacher is None or self.kd_ratio == 0:
                loss = self.criterion(logits, labels)
            else:
                loss = distillation_loss(logits, teacher, labels, self.kd_ratio)
            loss.backward()
            loss_sum += loss.item()
            if teacher is None:
                teacher = logits.detach()
        return loss_sum

    def train_epoch(self, train: tuple[Tensor, Tensor]) -> float:
        """One epoch of its stage; a stage's first epoch resets momentum and, when it opens
        width, sorts the channels by importance first."""
        index = self.plan.stage_at(self.epochs_done)
        if self.epochs_done == self.plan.starts[index]:
            self.optimizer.state.clear()
            if self.plan.stages[index].elastic == "width":
                reorganize_channels(self.supernet, self.plan.trained_widths(index))
        allowed = self.plan.opened(index)
        rng = np.random.default_rng(derive_seed(self.seed, "paths", self.epochs_done))
        steps = self.steps_per_epoch(len(train[1]))
        losses = [self.train_step(train, self.sampler.sandwich(allowed, rng)) for _ in range(steps)]
        self.epochs_done += 1
        return float(np.mean(losses))
