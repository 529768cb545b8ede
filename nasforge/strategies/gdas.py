"""GDAS (Dong & Yang, CVPR 2019), the strategy: one Gumbel-sampled op per edge, hard forward, soft backward.

Followed: ``search_model_gdas.py`` of github.com/D-X-Y/AutoDL-Projects.
"""

from __future__ import annotations

import torch
from pydantic import PositiveFloat, PositiveInt
from torch import Tensor

from nasforge.core.differentiable import StepKind
from nasforge.core.registry import register
from nasforge.strategies.alphas import DARTS_ADAM, Adam, GumbelStrategy

__all__ = ["GDAS"]


@register("strategy", "gdas", tags=("differentiable",))
class GDAS(GumbelStrategy):
    """GDAS (Dong & Yang, CVPR 2019): each step samples one op per edge by Gumbel-max; the
    forward is the hard one-hot (only the sampled op runs), the backward goes through the
    Gumbel-softmax of temperature ``tau``, annealed linearly from ``tau_max`` to ``tau_min`` over
    the epochs. Defaults as in the paper's code: 250 epochs, tau 10 -> 0.1, Adam lr 3e-4, betas
    (0.5, 0.999), weight decay 1e-3.
    """

    def __init__(
        self,
        epochs: PositiveInt = 250,
        tau_max: PositiveFloat = 10.0,
        tau_min: PositiveFloat = 0.1,
        adam: Adam = DARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        self.tau_max, self.tau_min = tau_max, tau_min

    @property
    def tau(self) -> float:
        progress = min(self.epoch, self.epochs - 1) / max(1, self.epochs - 1)
        return self.tau_max - (self.tau_max - self.tau_min) * progress

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        self._paths = {}
        for name, alpha in self.alphas.items():
            probs = self._perturbed(torch.log_softmax(alpha, dim=-1))
            index = int(torch.argmax(probs))
            hard = torch.zeros_like(probs)
            hard[index] = 1.0
            out[name] = hard - probs.detach() + probs if step == "arch" else hard
            self._paths[name] = [index]
        return out
