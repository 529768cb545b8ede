"""GDAS (Dong & Yang, CVPR 2019), the strategy: one Gumbel-sampled op per edge, hard forward, soft backward.

Followed: ``lib/models/cell_searchs/search_model_gdas.py`` and ``search_cells.py``
(``forward_gdas``) of github.com/D-X-Y/AutoDL-Projects, and its NAS-Bench-201 recipe
(``exps/NAS-Bench-201-algos/GDAS.py``, ``configs/nas-benchmark/algos/GDAS.config``).
"""

from __future__ import annotations

from typing import Any

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

    As ``forward_gdas``, the edge's output adds the (zero-valued) weights of the ops not sampled,
    ``sum_i (w_i * op_i(x) if i == sampled else w_i)``, so each step's gradient reaches every
    candidate's weight, not only the sampled one's (``unsampled_gradient: false``: only the
    sampled one's). The supernet weights train as ``GDAS.config`` says (read by the ``dnas``
    estimator through :meth:`weight_optimizer` where its options leave them unset): SGD with
    Nesterov momentum 0.9 and weight decay 5e-4.
    """

    def __init__(
        self,
        epochs: PositiveInt = 250,
        tau_max: PositiveFloat = 10.0,
        tau_min: PositiveFloat = 0.1,
        unsampled_gradient: bool = True,
        adam: Adam = DARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        self.tau_max, self.tau_min = tau_max, tau_min
        self.unsampled_gradient = unsampled_gradient

    def weight_optimizer(self) -> dict[str, Any]:
        """NAS-Bench-201's ``GDAS.config``: Nesterov momentum, weight decay 5e-4."""
        return {"nesterov": True, "weight_decay": 5e-4}

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
            if step != "arch":
                out[name] = hard
            elif self.unsampled_gradient:
                out[name] = hard - probs.detach() + probs
            else:  # only the sampled weight carries a gradient
                out[name] = hard.index_put((torch.tensor([index]),), (hard - probs.detach() + probs)[index : index + 1])
            self._paths[name] = [index]
        return out
