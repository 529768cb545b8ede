"""The DARTS search network: every node of a cell reads every earlier node through a
:class:`~nasforge.nn.mixed.MixedOp` over ``none`` and the space's ops (or a PC-DARTS
partial-channel edge), as the supernet of :class:`~nasforge.spaces.darts_cells.DartsSpace`.

Followed: ``cnn/model_search.py`` of the DARTS code (github.com/quark0/darts) and
``model_search.py`` of PC-DARTS (github.com/yuhuixu1993/PC-DARTS).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from nasforge.core.arch import Arch
from nasforge.nn.mixed import MixedOp, Supernet
from nasforge.nn.ops import OPS, FactorizedReduce, ReLUConvBN
from nasforge.nn.partial import PartialChannelChoice, partial_width
from nasforge.spaces.darts_network import DartsCell, DartsNetwork, cell_plan, stem

if TYPE_CHECKING:
    from nasforge.spaces.darts_cells import DartsSpace

__all__ = ["SearchCell", "DartsSearchNetwork", "DartsSupernet", "node_values", "edge_name", "Path"]


def _search_op(op: str, C: int, stride: int) -> nn.Module:
    """A candidate on an edge of the search network: batch norms without affine parameters, and
    pooling followed by one (DARTS' ``MixedOp``)."""
    module = OPS[op](C, C, stride, affine=False)
    if "pool" in op:
        module = nn.Sequential(module, nn.BatchNorm2d(C, affine=False))
    return module


def _search_edge(name: str, ops: Sequence[str], C: int, stride: int, k: int) -> MixedOp:
    """One edge of the search network; with ``k > 1`` a PC-DARTS partial-channel edge."""
    if k == 1:
        return MixedOp(name, {op: _search_op(op, C, stride) for op in ops})
    width = partial_width(C, k)
    return PartialChannelChoice(name, {op: _search_op(op, width, stride) for op in ops}, k, stride)


def node_values(cell: str, node: int, a: int, x: str, b: int, y: str) -> dict[str, str | int]:
    """The four choices of one node: inputs ``a``, ``b`` through ops ``x``, ``y``."""
    return {f"{cell}.n{node}.in0": a, f"{cell}.n{node}.op0": x, f"{cell}.n{node}.in1": b, f"{cell}.n{node}.op1": y}


def edge_name(cell_type: str, node: int, source: int) -> str:
    return f"{cell_type}.{node}<-{source}"


#: Per node ``((input, op index), (input, op index))``, op indices into the edges' candidates.
Path = tuple[tuple[tuple[int, int], tuple[int, int]], ...]


class SearchCell(nn.Module):
    """A cell of the DARTS search network: every intermediate node ``i`` reads every earlier node
    ``j`` through the edge ``"{cell_type}.{i}<-{j}"``, a :class:`MixedOp` over ``ops``.

    Weighted mode (``path`` is None): node ``i`` sums all its edges, each mixing its candidates
    by the weights set on it. Single-path mode: node ``i`` sums exactly the two chosen
    ``(input, op)`` pairs of ``path``, calling the chosen candidates directly (both slots may use
    the same edge); the other edges are not computed.

    Args:
        cell_type: ``"normal"`` or ``"reduce"``.
        nodes: intermediate nodes.
        ops: candidate op names of every edge.
        C_pp: channels of node 0's source.
        C_p: channels of node 1's source.
        C: channels of the nodes.
        reduction: whether edges from the input nodes have stride 2.
        reduction_prev: whether node 0's source has twice this cell's resolution.
        partial_channels: PC-DARTS' K: edges are :class:`PartialChannelChoice` over candidates
            of ``C / K`` channels (1: plain :class:`MixedOp`).
    """

    def __init__(
        self,
        cell_type: str,
        nodes: int,
        ops: Sequence[str],
        C_pp: int,
        C_p: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        partial_channels: int = 1,
    ) -> None:
        super().__init__()
        self.cell_type = cell_type
        self.nodes = nodes
        self.preprocess0 = (
            FactorizedReduce(C_pp, C, affine=False) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, affine=False)
        )
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            _search_edge(edge_name(cell_type, i, j), ops, C, 2 if reduction and j < 2 else 1, partial_channels)
            for i in range(2, 2 + nodes)
            for j in range(i)
        )
        self.offsets = tuple(sum(range(2, i)) for i in range(2, 2 + nodes))
        self.path: Path | None = None

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node, offset in enumerate(self.offsets):
            if self.path is None:
                out = self.edges[offset](states[0])
                for j in range(1, len(states)):
                    out = out + self.edges[offset + j](states[j])
            else:
                (a, p), (b, q) = self.path[node]
                out = self.edges[offset + a].path_op(p)(states[a]) + self.edges[offset + b].path_op(q)(states[b])
            states.append(out)
        return torch.cat(states[2:], dim=1)


class DartsSearchNetwork(nn.Module):
    """The DARTS search network (DARTS' ``model_search.Network``) built of :class:`SearchCell`.

    Args:
        nodes: intermediate nodes per cell.
        ops: candidate op names of every edge.
        C: width of the first cells (16 in DARTS).
        layers: cells (8 in DARTS).
        in_channels: channels of the input images.
        num_classes: outputs of the classifier.
        partial_channels: PC-DARTS' K on every edge (1: none).
    """

    def __init__(
        self,
        nodes: int,
        ops: Sequence[str],
        C: int = 16,
        layers: int = 8,
        in_channels: int = 3,
        num_classes: int = 10,
        partial_channels: int = 1,
    ) -> None:
        super().__init__()
        self.stem = stem(in_channels, C)
        plan, C_last = cell_plan(C, layers, {"normal": nodes, "reduce": nodes})
        self.cells = nn.ModuleList(
            SearchCell(
                "reduce" if reduction else "normal",
                nodes,
                ops,
                C_pp,
                C_p,
                C_curr,
                reduction,
                reduction_prev,
                partial_channels,
            )
            for C_pp, C_p, C_curr, reduction, reduction_prev in plan
        )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))


class DartsSupernet(Supernet):
    """Weight sharing over a :class:`DartsSpace`: the DARTS search network.

    The choice modules are the edges, one :class:`MixedOp` per ``(cell, node i, input j)``
    named ``"normal.{i}<-{j}"`` or ``"reduce.{i}<-{j}"`` (shared by every cell of that type),
    over ``("none", *space.ops)``. :meth:`DartsSpace.edge_choices` lists them.

    - **Single path**, ``activate(arch)`` with an arch of the space: node ``i`` of every cell
      sums exactly its two chosen ``(input, op)`` pairs; no other edge runs. Any combination
      of candidate values runs, including ones :meth:`DartsSpace.is_valid` rejects (swapped or
      repeated inputs), so fairness-driven training rules may use them.
    - **Weighted**, ``set_weights({edge name: weights})``: node ``i`` sums every edge, each
      mixing its candidates by its weights, as DARTS (softmax of the edge's alphas), SNAS and
      GDAS (Gumbel samples) need. ``weights[name]`` is a 1-D tensor of ``len(space.ops) + 1``
      entries, ``none`` first, one per edge name (14 per cell type for ``darts``); gradients
      flow into it. :meth:`DartsSpace.derive` turns such weights into an arch, by DARTS' rule.

    :meth:`export` returns a :class:`DartsNetwork` holding copies of the path's modules.

    Args:
        network: the search network.
        space: the space whose archs :meth:`activate` reads.
    """

    def __init__(self, network: DartsSearchNetwork, space: DartsSpace) -> None:
        super().__init__(network)
        self.space = space
        self.search_cells = [cell for cell in network.cells if isinstance(cell, SearchCell)]

    def activate(self, arch: Arch) -> None:
        """Single-path mode: every cell runs ``arch``'s pairs for its type."""
        paths = self.space.paths(arch)
        for cell in self.search_cells:
            cell.path = paths[cell.cell_type]

    def set_weights(self, weights: Mapping[str, Tensor]) -> None:
        """Weighted mode: every edge mixes its candidates by ``weights[edge name]``."""
        missing = [name for name in self.choice_names() if name not in weights]
        if missing:
            raise KeyError(f"no weights for edge(s) {', '.join(missing)}")
        super().set_weights(weights)
        for cell in self.search_cells:
            cell.path = None

    def export(self, arch: Arch) -> DartsNetwork:
        """A standalone :class:`DartsNetwork` on ``arch``'s path with copies of the supernet's weights.

        A module the path uses twice (an ENAS node reading one node twice through one op)
        stays one module in the child.
        """
        self.activate(arch)
        network = self.network
        assert isinstance(network, DartsSearchNetwork)
        memo: dict[int, object] = {}
        cells = []
        for cell in self.search_cells:
            ops, inputs = [], []
            assert cell.path is not None
            for ((a, p), (b, q)), offset in zip(cell.path, cell.offsets, strict=True):
                ops += [cell.edges[offset + a].path_op(p), cell.edges[offset + b].path_op(q)]
                inputs += [a, b]
            pre0, pre1, ops = copy.deepcopy((cell.preprocess0, cell.preprocess1, ops), memo)
            cells.append(DartsCell(pre0, pre1, ops, inputs, range(2, 2 + cell.nodes)))
        stem, classifier = copy.deepcopy((network.stem, network.classifier), memo)
        child = DartsNetwork(stem, cells, classifier)
        return child.train(self.training)
