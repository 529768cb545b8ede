"""SNAS (Xie et al., ICLR 2019), the strategy: Gumbel-softmax relaxed edges with an annealed temperature.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PositiveFloat, PositiveInt
from torch import Tensor

from nasforge.core.differentiable import StepKind
from nasforge.core.registry import register
from nasforge.strategies.alphas import DARTS_ADAM, Adam, GumbelStrategy

__all__ = ["SNAS"]


@register("strategy", "snas", tags=("differentiable",))
class SNAS(GumbelStrategy):
    """SNAS (Xie et al., ICLR 2019): edges mix their candidates by a Gumbel-softmax sample of
    temperature ``tau0 * decay**epoch``; alphas and weights descend the training loss jointly
    (single level). The paper anneals the temperature exponentially without giving its values;
    ``tau0 = 1``, ``decay = 0.97`` follow the public reimplementations. 150 epochs and Adam lr
    3e-4, betas (0.5, 0.999), weight decay 1e-3 as there. The resource constraint is not
    implemented.
    """

    bilevel = False

    def __init__(
        self,
        epochs: PositiveInt = 150,
        tau0: PositiveFloat = 1.0,
        decay: Annotated[float, Field(gt=0, le=1)] = 0.97,
        adam: Adam = DARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        self.tau0, self.decay = tau0, decay

    @property
    def tau(self) -> float:
        return self.tau0 * self.decay**self.epoch

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        self._paths = None
        out = {name: self._perturbed(alpha) for name, alpha in self.alphas.items()}
        return out if step == "arch" else {name: w.detach() for name, w in out.items()}
