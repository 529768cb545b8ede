"""PC-DARTS (Xu et al., ICLR 2020), the strategy: DARTS with edge normalisation on a partial-channel supernet.

Followed: ``model_search.py`` and ``architect.py`` of github.com/yuhuixu1993/PC-DARTS.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import Tensor

from nasforge.core.differentiable import StepKind, edge_choices
from nasforge.core.registry import register

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace
from nasforge.strategies.alphas import PCDARTS_ADAM, PCDARTSAdam
from nasforge.strategies.darts import DARTS

__all__ = ["PCDARTS"]


_EDGE = re.compile(r"^(?P<node>.*\d+)<-\d+$")


@register("strategy", "pcdarts", tags=("differentiable",))
class PCDARTS(DARTS):
    """PC-DARTS (Xu et al., ICLR 2020): DARTS on a partial-channel supernet with edge normalisation.

    Only ``1/K`` of each edge's channels go through its candidates (the ``dnas`` estimator builds
    ``space.supernet(partial_channels=K)``, see :mod:`nasforge.nn.partial`). Every edge
    ``i<-j`` also has a beta; node ``i``'s edges are weighted by the softmax of its betas, so an
    edge mixes its candidates by ``softmax(beta_i)_j * softmax(alpha_ij)``. Derivation uses the
    same products (DARTS spaces: the two strongest edges per node by them). Edges are grouped by
    node through their names (``"3<-1"``, ``"normal.3<-1"``); an edge of any other name is its
    own node. Architecture steps are skipped in the first ``warmup`` epochs (weights only).

    Defaults are the paper's (CIFAR-10): 50 epochs, K=4, warm-up 15 epochs, Adam lr 6e-4, betas
    (0.5, 0.999), weight decay 1e-3. The paper's weights use SGD lr 0.1 with batch 256: those
    are options of the ``dnas`` estimator (``lr``, ``batch_size``), whose defaults are DARTS'.
    """

    def __init__(
        self,
        epochs: PositiveInt = 50,
        partial_channels: Annotated[int, Field(ge=1)] = 4,
        warmup: NonNegativeInt = 15,
        adam: PCDARTSAdam = PCDARTS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        self.partial_channels = partial_channels
        self.warmup = warmup

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        self.edges = dict(edge_choices(space))
        self.nodes: dict[str, list[str]] = {}
        for name in self.edges:
            match = _EDGE.match(name)
            self.nodes.setdefault(match["node"] if match else name, []).append(name)
        self._betas: dict[str, Tensor] = {}
        super().setup(space, objective, seed=seed)
        self._betas = {node: self._init(len(edges)) for node, edges in self.nodes.items()}
        self.optimizer = self._new_optimizer()

    def _tensors(self) -> dict[str, Tensor]:
        return {**super()._tensors(), **{f"beta/{node}": beta for node, beta in self._betas.items()}}

    def edge_normalisation(self, detach: bool = False) -> dict[str, Tensor]:
        """Per edge, the softmax of its node's betas at that edge (a 0-d tensor)."""
        out: dict[str, Tensor] = {}
        for node, edges in self.nodes.items():
            beta = self._betas[node].detach() if detach else self._betas[node]
            out.update(zip(edges, torch.softmax(beta, dim=-1), strict=True))
        return out

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        self._paths = None
        scale = self.edge_normalisation()
        out = {name: scale[name] * torch.softmax(alpha, dim=-1) for name, alpha in self.alphas.items()}
        return out if step == "arch" else {name: w.detach() for name, w in out.items()}

    def edge_weights(self) -> dict[str, Tensor]:
        scale = self.edge_normalisation(detach=True)
        return {name: scale[name] * w for name, w in super().edge_weights().items()}

    def searching(self) -> bool:
        return self.epoch >= self.warmup

    def snapshot(self) -> dict[str, Any]:
        """As DARTS' (``probs`` are the products that derivation uses) plus each edge's weight."""
        scale = self.edge_normalisation(detach=True)
        return {**super().snapshot(), "edge_weight": {name: round(float(v), 6) for name, v in scale.items()}}
