"""Few-shot NAS (Zhao et al., ICML 2021, "Few-shot Neural Architecture Search"): split the
one-shot supernet into sub-supernets, one per operation of the chosen edges.

Followed: ``Few-Shot_NasBench201/exps/supernet/few-shot-supernet_train.py`` of
github.com/aoiang/few-shot-NAS. The one-shot supernet trains first; then, for every combination
of candidates of the split edges (``--edge_to_split``, ``--edge_op``: one edge, 5
sub-supernets, on NAS-Bench-201), a copy of it with those edges fixed to that combination loads
the one-shot weights (``search_model.load_state_dict(checkpoint['search_model'], strict=False)``)
and trains on with a fresh optimiser and schedule, sampling the other choices as the one-shot
rule did. An arch is scored on the sub-supernet whose split edges it shares.

:class:`FewShotTrainer` is a :class:`~nasforge.oneshot.trainer.SupernetTrainer` (so the supernet
estimator's checkpoints, resume and scoring apply unchanged): its first ``settings.epochs``
epochs train the one-shot supernet, the next ``few_shot.epochs`` train every sub-supernet one
epoch each; :meth:`~FewShotTrainer.state_dict` holds the sub-supernets too.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import Tensor, nn

from nasforge.core.arch import Arch, Choice, Value
from nasforge.core.errors import ConfigError
from nasforge.core.seeding import derive_seed
from nasforge.core.space import SearchSpace
from nasforge.nn.mixed import Supernet
from nasforge.oneshot.rules import TrainingRule
from nasforge.oneshot.trainer import SupernetSettings, SupernetTrainer

__all__ = ["FewShot", "FewShotTrainer", "SubSpace", "split_groups", "group_of"]


class FewShot(BaseModel):
    """The supernet estimator's ``few_shot`` option.

    Attributes:
        edges: the choices (edges) to split on; one sub-supernet per combination of their
            candidates (NB201, one edge: 5).
        epochs: epochs each sub-supernet trains after the split (cosine from the estimator's
            ``lr`` to 0 over them, a fresh optimiser, as the official code).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    edges: tuple[str, ...] = Field(min_length=1)
    epochs: PositiveInt = 1


def split_groups(space: SearchSpace, few_shot: FewShot) -> list[dict[str, Value]]:
    """The split edges' values of each sub-supernet, in candidate order (the first edge slowest)."""
    choices = space.choices()
    unknown = [edge for edge in few_shot.edges if edge not in choices]
    if unknown:
        raise ConfigError(
            f"few_shot: {', '.join(map(repr, unknown))} is not a choice of the space; its choices: {', '.join(choices)}"
        )
    if len(set(few_shot.edges)) != len(few_shot.edges):
        raise ConfigError(f"few_shot: an edge is named twice in {list(few_shot.edges)}")
    return [
        dict(zip(few_shot.edges, values, strict=True))
        for values in itertools.product(*(choices[edge].candidates for edge in few_shot.edges))
    ]


def group_of(groups: list[dict[str, Value]], arch: Arch) -> int:
    """The index of the sub-supernet of ``groups`` that ``arch`` belongs to."""
    return groups.index({edge: arch[edge] for edge in groups[0]})


class SubSpace(SearchSpace):
    """``inner`` with some choices fixed: the archs a sub-supernet trains (rules sample from it)."""

    def __init__(self, inner: SearchSpace, fixed: Mapping[str, Value]) -> None:
        self.inner = inner
        self.fixed = dict(fixed)
        self._choices = {
            name: Choice(name, (self.fixed[name],), choice.ordered) if name in self.fixed else choice
            for name, choice in inner.choices().items()
        }

    def choices(self) -> Mapping[str, Choice]:
        return self._choices

    def build(self, arch: Arch) -> nn.Module:
        return self.inner.build(arch)

    def is_valid(self, arch: Arch) -> bool:
        return self.inner.is_valid(arch)

    def format(self, arch: Arch) -> str:
        return self.inner.format(arch)


class FewShotTrainer(SupernetTrainer):
    """A supernet trainer that splits its supernet into sub-supernets after the one-shot epochs.

    Args:
        few_shot: the split edges and the sub-supernets' epochs.
        (the rest, ``seed``, ``device``, ``criterion`` too): as :class:`~nasforge.oneshot.trainer.SupernetTrainer`.
    """

    def __init__(
        self, supernet: Supernet, space: SearchSpace, rule: TrainingRule, settings: SupernetSettings, few_shot: FewShot, **options: Any
    ) -> None:
        super().__init__(supernet, space, rule, settings, **options)
        if rule.trains_asked_archs:
            raise ConfigError(f"few_shot: rule {rule.name!r} trains the asked archs; use spos, fairnas or rsps")
        self.few_shot = few_shot
        #: The split edges' values of each sub-supernet, in candidate order (the first edge slowest).
        self.groups = split_groups(space, few_shot)
        self.subs: list[SupernetTrainer] | None = None

    def group_of(self, arch: Arch) -> int:
        """The index of the sub-supernet ``arch`` belongs to (its values on the split edges)."""
        return group_of(self.groups, arch)

    def split(self) -> None:
        """Make the sub-supernets: copies of the one-shot supernet (its weights, BN statistics
        included), each with a fresh optimiser, its epochs' schedule and its split edges fixed."""
        settings = self.settings.model_copy(update={"epochs": self.few_shot.epochs})
        seed = derive_seed(self.seed, "few-shot")  # one stream for all: the same data order and scoring batches
        self.subs = [
            SupernetTrainer(
                copy.deepcopy(self.supernet),
                SubSpace(self.space, group),
                self.rule,
                settings,
                seed=seed,
                device=self.device,
                criterion=self.criterion,
            )
            for group in self.groups
        ]

    def _trainer_of(self, arch: Arch) -> SupernetTrainer:
        return self if self.subs is None else self.subs[self.group_of(arch)]

    # -- training --------------------------------------------------------------------------------

    def train_epoch(self, train: tuple[Tensor, Tensor]) -> float:
        """A one-shot epoch until ``settings.epochs`` are done, then one epoch of every sub-supernet."""
        if self.epochs_done < self.settings.epochs:
            return super().train_epoch(train)
        if self.subs is None:
            self.split()
        assert self.subs is not None
        loss = float(np.mean([sub.train_epoch(train) for sub in self.subs]))
        self.epochs_done += 1
        return loss

    # -- scoring ---------------------------------------------------------------------------------

    def recalibrate(self, arch: Arch, train: tuple[Tensor, Tensor]) -> None:
        trainer = self._trainer_of(arch)
        if trainer is self:
            super().recalibrate(arch, train)
        else:
            trainer.recalibrate(arch, train)

    def evaluate(self, arch: Arch, valid: tuple[Tensor, Tensor], *, start: int = 0) -> tuple[float, float]:
        trainer = self._trainer_of(arch)
        if trainer is self:
            return super().evaluate(arch, valid, start=start)
        return trainer.evaluate(arch, valid, start=start)

    def supernet_of(self, arch: Arch) -> Supernet:
        """The (sub-)supernet that scores ``arch``."""
        return self._trainer_of(arch).supernet

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The one-shot state (``supernet`` stays the one-shot supernet) plus the sub-supernets'."""
        state = super().state_dict()
        state["few_shot"] = None if self.subs is None else [sub.state_dict() for sub in self.subs]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        subs = state.get("few_shot")
        if subs is None:
            self.subs = None
            return
        self.split()
        assert self.subs is not None
        if len(subs) != len(self.subs):
            raise ConfigError(f"few_shot: the checkpoint holds {len(subs)} sub-supernets, this split makes {len(self.subs)}")
        for sub, sub_state in zip(self.subs, subs, strict=True):
            sub.load_state_dict(sub_state)
