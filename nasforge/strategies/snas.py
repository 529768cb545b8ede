"""SNAS (Xie et al., ICLR 2019), the strategy: Gumbel-softmax relaxed edges with an annealed temperature.

Followed: ``SNAS/train_search.py`` and ``SNAS/utils.py`` of github.com/SNAS-Series/SNAS-Series
(the single-GPU search of its README: ``--snas --epochs 150 --temp 1 --temp_min 0.03
--temp_annealing``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import Tensor, nn

from nasforge.core.differentiable import StepKind
from nasforge.core.registry import register
from nasforge.strategies.alphas import DARTS_ADAM, Adam, GumbelStrategy

__all__ = ["SNAS", "SNASSGD"]


class SNASSGD(BaseModel):
    """The alphas' plain SGD of SNAS' single-GPU code: ``torch.optim.SGD(model.arch_parameters(),
    lr=args.arch_learning_rate)``, lr 3e-4, no momentum, no weight decay."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: PositiveFloat = 3e-4
    momentum: NonNegativeFloat = 0.0
    weight_decay: NonNegativeFloat = 0.0


SNAS_SGD = SNASSGD()


@register("strategy", "snas", tags=("differentiable",))
class SNAS(GumbelStrategy):
    """SNAS (Xie et al., ICLR 2019): edges mix their candidates by a Gumbel-softmax sample of
    temperature ``tau``; alphas and weights descend the training loss jointly (single level, so
    the ``dnas`` estimator trains both on the whole training split).

    As the official code (``SNAS/train_search.py``, ``Temp_Scheduler`` in ``SNAS/utils.py``):
    the temperature falls linearly from ``tau0`` to ``tau_min`` over the run, the scheduler
    stepped before each epoch, so epoch ``e`` (from 0) samples at
    ``tau_min + (tau0 - tau_min) * (1 - (e + 1) / epochs)`` and the last epoch at ``tau_min``;
    the alphas train with plain SGD (``optimizer: sgd``, lr 3e-4: the single-GPU branch of
    ``init_optimizer``) and their gradient norm is clipped at ``arch_grad_clip`` (10, as
    ``clip_grad_norm_(self.model.arch_parameters(), 10.)``). ``optimizer: adam`` uses the
    ``adam`` piece instead (the multi-GPU branch: lr 3e-4, betas (0.5, 0.999), weight decay 1e-3).
    150 epochs as there. The resource constraint is not implemented.
    """

    bilevel = False

    def __init__(
        self,
        epochs: PositiveInt = 150,
        tau0: PositiveFloat = 1.0,
        tau_min: PositiveFloat = 0.03,
        optimizer: Literal["sgd", "adam"] = "sgd",
        sgd: SNASSGD = SNAS_SGD,
        arch_grad_clip: PositiveFloat | None = 10.0,
        adam: Adam = DARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        self.tau0, self.tau_min = tau0, tau_min
        self.optimizer_kind = optimizer
        self.sgd = sgd
        self.arch_grad_clip = arch_grad_clip

    def _new_optimizer(self) -> torch.optim.Optimizer:  # type: ignore[override]
        if self.optimizer_kind == "adam":
            return super()._new_optimizer()
        return torch.optim.SGD(
            self.parameters(), lr=self.sgd.lr, momentum=self.sgd.momentum, weight_decay=self.sgd.weight_decay
        )

    @property
    def tau(self) -> float:
        progress = min(self.epoch + 1, self.epochs) / self.epochs
        return self.tau_min + (self.tau0 - self.tau_min) * (1 - progress)

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        self._paths = None
        out = {name: self._perturbed(alpha) for name, alpha in self.alphas.items()}
        return out if step == "arch" else {name: w.detach() for name, w in out.items()}

    def step(self) -> None:
        if self.arch_grad_clip is not None:
            nn.utils.clip_grad_norm_(self.parameters(), self.arch_grad_clip)
        super().step()
