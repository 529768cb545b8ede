"""P-DARTS (Chen et al., ICCV 2019), the strategy: DARTS in stages that deepen the network and prune candidates.

Followed: ``train_search.py`` of github.com/chenxin061/pdarts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import NonNegativeInt, PositiveInt
from torch import Tensor

from nasforge.core.arch import Arch
from nasforge.core.capabilities import Capability
from nasforge.core.differentiable import StepKind
from nasforge.core.errors import ConfigError
from nasforge.core.registry import register

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace
from nasforge.strategies.alphas import PCDARTS_ADAM, Fraction, PCDARTSAdam
from nasforge.strategies.darts import DARTS

__all__ = ["PDARTS"]


@register("strategy", "pdarts", tags=("differentiable",))
class PDARTS(DARTS):
    """P-DARTS (Chen, Xie, Wu & Tian, ICCV 2019): progressive DARTS in stages of deepening supernets.

    The search runs ``len(layers)`` stages of ``epochs / len(layers)`` epochs; stage ``s``
    searches a supernet of ``layers[s]`` cells (``space.supernet(layers=...)``, fresh weights;
    DARTS spaces) with fresh alphas and a fresh Adam. Search-space approximation: at the start
    of stage ``s > 0`` each edge keeps its ``keep[s - 1]`` candidates of highest softmax weight
    in the stage before (``none`` competes like any op; only the final derivation excludes it,
    as in the paper's code);
    the others never run again. Dropout of rate ``dropout[s]`` follows every ``skip_connect``
    while training, decaying as in the paper's code: linearly over the stage during the first
    ``warmup`` epochs (weights only, no architecture step), then by ``exp(-0.2 * epochs since
    warm-up)``. The derived normal cell keeps at most ``max_skip`` skip connections (the weakest
    extra ones are zeroed and the cell derived again).

    Defaults are the paper's CIFAR-10 search: cells 5 -> 11 -> 17, ops 8 -> 5 -> 3, 25 epochs
    per stage of which 10 warm-up, skip dropout 0.1 / 0.4 / 0.7 (the code's), at most 2 skips,
    Adam lr 6e-4, betas (0.5, 0.999), weight decay 1e-3. As in the paper's code, the weights'
    cosine learning-rate schedule (and their optimiser) restarts with each stage.
    """

    #: Stages deepen DARTS cells (``space.supernet(layers=...)``) and prune edges' candidates.
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.SUPERNET, Capability.EDGES})

    def __init__(
        self,
        epochs: PositiveInt = 75,
        layers: tuple[PositiveInt, ...] = (5, 11, 17),
        keep: tuple[PositiveInt, ...] = (5, 3),
        dropout: tuple[Fraction, ...] = (0.1, 0.4, 0.7),
        warmup: NonNegativeInt = 10,
        max_skip: NonNegativeInt = 2,
        adam: PCDARTSAdam = PCDARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        if len(keep) != len(layers) - 1 or len(dropout) != len(layers):
            raise ConfigError(
                f"pdarts: {len(layers)} stages (layers) need {len(layers) - 1} keep counts and {len(layers)} dropout "
                f"rates; got {len(keep)} and {len(dropout)}"
            )
        if epochs % len(layers):
            raise ConfigError(f"pdarts: epochs ({epochs}) must split evenly into {len(layers)} stages")
        self.layers, self.keep, self.dropout, self.warmup, self.max_skip = layers, keep, dropout, warmup, max_skip
        self.stage_epochs = epochs // len(layers)

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        self.stage = 0
        self.kept = {name: list(range(len(choice))) for name, choice in self.edges.items()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stage": self.stage, "kept": self.kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = int(state["stage"])
        self.kept = {name: list(indices) for name, indices in state["kept"].items()}
        super().load_state_dict(state)

    def _stage_of(self, epoch: int) -> int:
        return min(epoch // self.stage_epochs, len(self.layers) - 1)

    def _advance(self) -> None:
        """Enter the current epoch's stage: drop the weakest candidates, fresh alphas and Adam."""
        while self.stage < self._stage_of(self.epoch):
            weights = self.edge_weights()
            for name, indices in self.kept.items():
                ranked = sorted(indices, key=lambda i: float(weights[name][i]), reverse=True)
                self.kept[name] = sorted(ranked[: self.keep[self.stage]])
            self.stage += 1
            with torch.no_grad():
                for alpha in self.alphas.values():
                    alpha.copy_(self._init(len(alpha)))
            self.optimizer = self._new_optimizer()

    def _masked(self, alpha: Tensor, indices: list[int]) -> Tensor:
        index = torch.as_tensor(indices)
        return torch.zeros(len(alpha)).index_put((index,), torch.softmax(alpha[index], dim=-1))

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        self._advance()
        self._paths = {name: list(indices) for name, indices in self.kept.items()}
        out = {name: self._masked(alpha, self.kept[name]) for name, alpha in self.alphas.items()}
        return out if step == "arch" else {name: w.detach() for name, w in out.items()}

    def edge_weights(self) -> dict[str, Tensor]:
        return {name: self._masked(alpha.detach(), self.kept[name]) for name, alpha in self.alphas.items()}

    def derived(self) -> Arch:
        """DARTS' derivation, then at most ``max_skip`` skip connections in the normal cell."""
        weights = self.edge_weights()
        arch = super().derived()
        while self._derive is not None and self._skips(arch) > self.max_skip:
            skips = [
                (float(w[k]), name, k)
                for name, w in weights.items()
                if name.startswith("normal.")
                for k, value in enumerate(self.edges[name].candidates)
                if value == "skip_connect" and float(w[k]) > 0
            ]
            _, name, k = min(skips)
            weights[name][k] = 0.0
            arch = self._derive(weights)
        return arch

    @staticmethod
    def _skips(arch: Arch) -> int:
        return sum(1 for key, value in arch.items() if key.startswith("normal.") and value == "skip_connect")

    def supernet_options(self) -> dict[str, Any]:
        return {"layers": self.layers[self._stage_of(self.epoch)]}

    def op_dropout(self) -> dict[str, float]:
        stage, epoch = self._stage_of(self.epoch), self._stage_epoch()
        if epoch < self.warmup:
            rate = self.dropout[stage] * (self.stage_epochs - epoch - 1) / self.stage_epochs
        else:
            rate = self.dropout[stage] * math.exp(-(epoch - self.warmup) * 0.2)
        return {"skip_connect": rate}

    def _stage_epoch(self) -> int:
        """Epochs done in the current epoch's stage."""
        return self.epoch - self._stage_of(self.epoch) * self.stage_epochs

    def searching(self) -> bool:
        return self._stage_epoch() >= self.warmup

    def weight_schedule(self) -> tuple[int, int]:
        return self._stage_epoch(), self.stage_epochs

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "stage": self.stage, "kept": self.kept}
