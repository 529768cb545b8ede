"""DARTS (Liu, Simonyan & Yang, ICLR 2019), the strategy: softmax-mixed edges.

Followed: ``cnn/architect.py`` and ``cnn/model_search.py`` of the DARTS code (github.com/quark0/darts).
"""

from __future__ import annotations

import torch
from pydantic import PositiveInt
from torch import Tensor

from nasforge.core.differentiable import StepKind
from nasforge.core.registry import register
from nasforge.strategies.alphas import DARTS_ADAM, Adam, DifferentiableStrategy

__all__ = ["DARTS"]


@register("strategy", "darts", tags=("differentiable",))
class DARTS(DifferentiableStrategy):
    """DARTS (Liu, Simonyan & Yang, ICLR 2019): every edge mixes its candidates by the softmax
    of its alphas; the alphas descend the validation loss (bilevel; first or second order is
    the ``dnas`` estimator's ``order``). Defaults are the paper's: 50 epochs, Adam lr 3e-4,
    betas (0.5, 0.999), weight decay 1e-3.
    """

    def __init__(self, epochs: PositiveInt = 50, adam: Adam = DARTS_ADAM) -> None:
        super().__init__(epochs, adam)

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        self._paths = None
        out = {name: torch.softmax(alpha, dim=-1) for name, alpha in self.alphas.items()}
        return out if step == "arch" else {name: w.detach() for name, w in out.items()}
