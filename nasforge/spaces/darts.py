"""The DARTS / ENAS convolutional cell space (Liu et al., ICLR 2019; Pham et al., ICML 2018).

A network stacks two kinds of cell, *normal* and *reduction*; every cell of a kind follows the
same cell arch. A cell has 2 input nodes (the outputs of the two previous cells, projected to
the cell's width) and ``B`` intermediate nodes; node ``i`` sums two ops, each applied to one
earlier node; the cell's output concatenates its intermediate nodes.

Two variants:

- ``darts``: ``B = 4`` nodes, ops :data:`DARTS_OPS` (DARTS' 8 candidates without ``none``), and
  the two inputs of a node are distinct nodes, as DARTS derives them (top two incoming edges).
  The space holds ``(180 * 7**8)**2``, about 1.1e18 cell pairs, the paper's "10^18".
- ``enas``: ENAS' micro space as the ENAS genotype is usually evaluated: ``B = 5`` nodes, ops
  :data:`ENAS_OPS`, and both inputs of a node may be the same node (ENAS samples them
  independently). ENAS' own code concatenates only the nodes no other node reads; here, as in
  the DARTS-style evaluation of the ENAS cell, every intermediate node is concatenated.

**Choices.** For each cell type ``c`` in ``normal, reduce``, node ``i`` in ``2..B+1`` and slot
``k`` in ``0, 1``: ``"c.n{i}.in{k}"`` (the input node) and ``"c.n{i}.op{k}"`` (the op on it).
**Symmetry.** A node's two slots are summed, so swapping them gives the same cell; the space
keeps one order only (:meth:`DartsSpace.is_valid`): slot 0 has the smaller input (``darts``),
or the smaller ``(input, op)`` (``enas``, where both inputs may be equal). So every cell has
exactly one arch, and equal cells are equal archs. :meth:`DartsSpace.parse` accepts the two
pairs of a node in either order and :meth:`DartsSpace.format` prints them in that order: a
published genotype reads and prints back as the same cells, with the pairs of some nodes
swapped (``genotype.canonical()`` gives the printed form).

**Notation.** Archs read and print as the DARTS papers' genotypes
(:mod:`nasforge.spaces.genotypes`), or by a published genotype's name::

    space.parse("Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)")
    space.parse("DARTS_V2")

**Evaluation network** (:func:`darts_network`, what :meth:`DartsSpace.build` returns): the DARTS
papers' CIFAR network for any genotype, including ones outside this space (NASNet, AmoebaNet).

**Supernet** (:meth:`DartsSpace.supernet`): the DARTS search network, every node connected to
every earlier node through a :class:`LayerChoice` over ``none`` and the variant's ops. See
:class:`DartsSupernet` for its two modes and the weights differentiable methods hand it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from nasforge.core.arch import Arch, Choice
from nasforge.core.errors import InvalidArchError
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace
from nasforge.ops.primitives import OPS, FactorizedReduce, ReLUConvBN
from nasforge.spaces.genotypes import CELL_TYPES, Genotype, get_genotype, parse_genotype
from nasforge.supernet.mixed import LayerChoice, Supernet
from nasforge.supernet.partial import PartialChannelChoice, partial_width

__all__ = [
    "DARTS_OPS",
    "ENAS_OPS",
    "drop_path",
    "DartsCell",
    "AuxiliaryHead",
    "DartsNetwork",
    "darts_network",
    "SearchCell",
    "DartsSearchNetwork",
    "DartsSupernet",
    "DartsSpace",
]

#: DARTS' candidate ops without ``none``, in the DARTS code's order.
DARTS_OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: ENAS' micro-search ops (separable 3x3 and 5x5, average and max pooling, identity), in its order.
ENAS_OPS: tuple[str, ...] = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "skip_connect")

#: Per variant: ops, intermediate nodes per cell, and whether a node's two inputs must differ.
_VARIANTS: dict[str, tuple[tuple[str, ...], int, bool]] = {"darts": (DARTS_OPS, 4, True), "enas": (ENAS_OPS, 5, False)}

_STEM_MULTIPLIER = 3

Pair = tuple[str, int]


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples of ``x`` with probability ``drop_prob``, scaling the rest by
    ``1 / (1 - drop_prob)`` (FractalNet's drop-path as NASNet and DARTS use it on cell ops).
    """
    keep = 1.0 - drop_prob
    mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep)
    return x.div(keep).mul(mask)


class DartsCell(nn.Module):
    """One cell of a fixed genotype: node ``2 + k`` sums ``ops[2k](states[inputs[2k]])`` and
    ``ops[2k+1](states[inputs[2k+1]])``; the output concatenates ``states[concat]``.

    In training mode with ``drop_prob > 0``, drop-path is applied to every op's output except
    identities (as in DARTS); otherwise the forward pass has no randomness and traces with fx.

    Args:
        preprocess0: projects the output of the cell before the previous one (node 0).
        preprocess1: projects the output of the previous cell (node 1).
        ops: two ops per intermediate node.
        inputs: the node each op reads.
        concat: the nodes concatenated into the output.
    """

    def __init__(
        self,
        preprocess0: nn.Module,
        preprocess1: nn.Module,
        ops: Sequence[nn.Module],
        inputs: Sequence[int],
        concat: Sequence[int],
    ) -> None:
        super().__init__()
        self.preprocess0 = preprocess0
        self.preprocess1 = preprocess1
        self.ops = nn.ModuleList(ops)
        self.inputs = tuple(inputs)
        self.concat = tuple(concat)
        self.droppable = tuple(not isinstance(op, nn.Identity) for op in ops)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k in range(0, len(self.ops), 2):
            outs = []
            for slot in (k, k + 1):
                out = self.ops[slot](states[self.inputs[slot]])
                if self.training and drop_prob > 0 and self.droppable[slot]:
                    out = drop_path(out, drop_prob)
                outs.append(out)
            states.append(outs[0] + outs[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


def _eval_cell(
    pairs: Sequence[Pair], concat: Sequence[int], C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool
) -> DartsCell:
    """A cell of the evaluation network (DARTS' ``model.Cell``): affine batch norms; in a
    reduction cell the ops reading the input nodes have stride 2."""
    pre0 = FactorizedReduce(C_pp, C) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0)
    ops = [OPS[op](C, C, 2 if reduction and source < 2 else 1) for op, source in pairs]
    return DartsCell(pre0, ReLUConvBN(C_p, C, 1, 1, 0), ops, [source for _, source in pairs], concat)


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier for CIFAR (from NASNet), attached after 2/3 of the cells.

    On the 8x8 maps of 32x32 inputs it is the paper's: ReLU, 5x5 average pooling with stride 3
    (to 2x2), 1x1 convolution to 128 channels, BN, ReLU, 2x2 convolution to 768, BN, ReLU, linear.
    Where that pooling would not give 2x2 (other input sizes) an adaptive average pooling to
    2x2 takes its place, so the head fits any input size; the parameters are the same.

    Args:
        C: channels of the feature map it reads.
        num_classes: outputs of its classifier.
        feature_size: height and width of the feature map it reads.
    """

    def __init__(self, C: int, num_classes: int, feature_size: tuple[int, int]) -> None:
        super().__init__()
        pooled = [(size - 5) // 3 + 1 for size in feature_size]
        pool = (
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
            if pooled == [2, 2]
            else nn.AdaptiveAvgPool2d(2)
        )
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class DartsNetwork(nn.Module):
    """A stem, a stack of :class:`DartsCell`, global average pooling and a linear classifier.

    Each cell reads the outputs of the two cells before it (the stem's output stands in for
    both at the start). :func:`darts_network` assembles the DARTS papers' evaluation network;
    :meth:`DartsSupernet.export` assembles a child of the supernet.

    Returns logits; in training mode with an auxiliary head, ``(logits, aux_logits)``. A
    training loop then adds ``aux_weight * cross_entropy(aux_logits, labels)`` to the loss
    (DARTS uses ``aux_weight = 0.4``). In eval mode (evaluation, fx tracing, export) the head is
    skipped and only logits come out.

    ``drop_path_prob`` is a plain attribute: DARTS raises it linearly from 0 to its final value
    over training (``model.drop_path_prob = p * epoch / epochs`` before each epoch).

    Args:
        stem: the first layers, from images to the first cells' input.
        cells: the cells, in order.
        classifier: the linear layer on the globally pooled output of the last cell.
        auxiliary_head: an optional second classifier, run in training mode only.
        auxiliary_index: the cell after which ``auxiliary_head`` reads.
        drop_path_prob: drop-path probability of the cells' ops in training mode.
    """

    def __init__(
        self,
        stem: nn.Module,
        cells: Sequence[DartsCell],
        classifier: nn.Module,
        auxiliary_head: nn.Module | None = None,
        auxiliary_index: int = -1,
        drop_path_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.cells = nn.ModuleList(cells)
        self.auxiliary_head = auxiliary_head
        self.auxiliary_index = auxiliary_index
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier
        self.drop_path_prob = drop_path_prob

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        s0 = s1 = self.stem(x)
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.auxiliary_index and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        return logits if aux_logits is None else (logits, aux_logits)


def _stem(in_channels: int, C: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, _STEM_MULTIPLIER * C, 3, padding=1, bias=False),
        nn.BatchNorm2d(_STEM_MULTIPLIER * C),
    )


def _plan(C: int, layers: int, multiplier: Mapping[str, int]) -> tuple[list[tuple[int, int, int, bool, bool]], int]:
    """Per cell ``(C_prev_prev, C_prev, C, reduction, reduction_prev)``, and the last width.

    Reduction cells sit at ``layers // 3`` and ``2 * layers // 3`` and double the width; a
    cell outputs ``multiplier[cell type] * C`` channels (DARTS' ``NetworkCIFAR``).
    """
    reductions = {layers // 3, 2 * layers // 3}
    C_pp = C_p = _STEM_MULTIPLIER * C
    C_curr = C
    reduction_prev = False
    plan = []
    for i in range(layers):
        reduction = i in reductions
        if reduction:
            C_curr *= 2
        plan.append((C_pp, C_p, C_curr, reduction, reduction_prev))
        C_pp, C_p = C_p, multiplier["reduce" if reduction else "normal"] * C_curr
        reduction_prev = reduction
    return plan, C_p


def darts_network(
    genotype: Genotype,
    *,
    C: int = 36,
    layers: int = 20,
    in_channels: int = 3,
    num_classes: int = 10,
    auxiliary: bool = False,
    drop_path_prob: float = 0.0,
    input_size: tuple[int, int] = (32, 32),
) -> DartsNetwork:
    """The DARTS papers' evaluation network for CIFAR (DARTS' ``NetworkCIFAR``) on ``genotype``.

    A 3x3 convolution to ``3C`` channels with BN; ``layers`` cells, reductions (stride 2,
    width doubled) at 1/3 and 2/3 of the depth; each cell projects node 0 by a 1x1 ReLUConvBN
    (a :class:`FactorizedReduce` after a reduction) and node 1 by a 1x1 ReLUConvBN to its width;
    optionally an :class:`AuxiliaryHead` after cell ``2 * layers // 3``; global average pooling
    and a linear classifier. With ``C=36, layers=20`` on 32x32 inputs it is the network of
    DARTS' Table 1: DARTS_V2 has 3,349,342 parameters besides its auxiliary head, what the
    DARTS code reports as 3.349342MB.

    Any genotype builds, with any number of nodes and concat lists (NASNet, AmoebaNet), as long
    as its ops are in :data:`~nasforge.ops.primitives.OPS`. ``input_size`` only matters for the
    auxiliary head's pooling.
    """
    multiplier = {cell: len(genotype.concat(cell)) for cell in CELL_TYPES}
    plan, C_last = _plan(C, layers, multiplier)
    cells = []
    auxiliary_index = 2 * layers // 3
    C_aux = 0
    for i, (C_pp, C_p, C_curr, reduction, reduction_prev) in enumerate(plan):
        cell_type = "reduce" if reduction else "normal"
        cells.append(
            _eval_cell(
                genotype.cell(cell_type), genotype.concat(cell_type), C_pp, C_p, C_curr, reduction, reduction_prev
            )
        )
        if i == auxiliary_index:
            C_aux = multiplier[cell_type] * C_curr
    head = None
    if auxiliary:
        halvings = sum(1 for i, step in enumerate(plan) if step[3] and i <= auxiliary_index)
        size = tuple(_halve(s, halvings) for s in input_size)
        head = AuxiliaryHead(C_aux, num_classes, size)  # type: ignore[arg-type]
    return DartsNetwork(
        _stem(in_channels, C), cells, nn.Linear(C_last, num_classes), head, auxiliary_index, drop_path_prob
    )


def _halve(size: int, times: int) -> int:
    for _ in range(times):
        size = math.ceil(size / 2)
    return size


def _search_op(op: str, C: int, stride: int) -> nn.Module:
    """A candidate on an edge of the search network: batch norms without affine parameters, and
    pooling followed by one (DARTS' ``MixedOp``)."""
    module = OPS[op](C, C, stride, affine=False)
    if "pool" in op:
        module = nn.Sequential(module, nn.BatchNorm2d(C, affine=False))
    return module


def _search_edge(name: str, ops: Sequence[str], C: int, stride: int, k: int) -> LayerChoice:
    """One edge of the search network; with ``k > 1`` a PC-DARTS partial-channel edge."""
    if k == 1:
        return LayerChoice(name, {op: _search_op(op, C, stride) for op in ops})
    width = partial_width(C, k)
    return PartialChannelChoice(name, {op: _search_op(op, width, stride) for op in ops}, k, stride)


def _node_values(cell: str, node: int, a: int, x: str, b: int, y: str) -> dict[str, str | int]:
    """The four choices of one node: inputs ``a``, ``b`` through ops ``x``, ``y``."""
    return {f"{cell}.n{node}.in0": a, f"{cell}.n{node}.op0": x, f"{cell}.n{node}.in1": b, f"{cell}.n{node}.op1": y}


def _edge_name(cell_type: str, node: int, source: int) -> str:
    return f"{cell_type}.{node}<-{source}"


#: Per node ``((input, op index), (input, op index))``, op indices into the edges' candidates.
Path = tuple[tuple[tuple[int, int], tuple[int, int]], ...]


class SearchCell(nn.Module):
    """A cell of the DARTS search network: every intermediate node ``i`` reads every earlier node
    ``j`` through the edge ``"{cell_type}.{i}<-{j}"``, a :class:`LayerChoice` over ``ops``.

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
            of ``C / K`` channels (1: plain :class:`LayerChoice`).
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
            _search_edge(_edge_name(cell_type, i, j), ops, C, 2 if reduction and j < 2 else 1, partial_channels)
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
        self.stem = _stem(in_channels, C)
        plan, C_last = _plan(C, layers, {"normal": nodes, "reduce": nodes})
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

    The choice modules are the edges, one :class:`LayerChoice` per ``(cell, node i, input j)``
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


@register("space", "darts", tags=("cell", "supernet"))
class DartsSpace(SearchSpace):
    """The DARTS (or ENAS micro) cell space: a normal and a reduction cell, each of ``B`` nodes
    reading two earlier nodes through one op each.

    Args:
        variant: ``"darts"`` (4 nodes, DARTS' 7 ops, distinct inputs) or ``"enas"`` (5 nodes,
            ENAS' 5 ops, inputs may repeat).
        C: initial width of the evaluation network (36 in the papers).
        layers: cells of the evaluation network (20 in the papers).
        auxiliary: give the evaluation network DARTS' auxiliary head; in training mode it then
            returns ``(logits, aux_logits)``, which nasforge's shared training loop does not
            accept, so leave it off for search-time training.
        drop_path_prob: drop-path probability on the evaluation network's cell ops in training
            (0.2 in DARTS' final training, raised linearly from 0).
        in_channels: channels of the input images (3 for CIFAR, 1 for MNIST).
        num_classes: outputs of the classifier.
        input_size: height and width of the input images (sizes the auxiliary head's pooling).
        supernet_C: initial width of the search network (16 in DARTS).
        supernet_layers: cells of the search network (8 in DARTS).

    Example:
        >>> space = DartsSpace(C=8, layers=5)
        >>> arch = space.parse("DARTS_V2")
        >>> arch["normal.n4.in0"], arch["normal.n4.op0"], arch["normal.n4.in1"], arch["normal.n4.op1"]
        (0, 'skip_connect', 1, 'sep_conv_3x3')
        >>> space.parse(space.format(arch)) == arch
        True
    """

    def __init__(
        self,
        variant: Literal["darts", "enas"] = "darts",
        C: PositiveInt = 36,
        layers: PositiveInt = 20,
        auxiliary: bool = False,
        drop_path_prob: Annotated[float, Field(ge=0, lt=1)] = 0.0,
        in_channels: PositiveInt = 3,
        num_classes: PositiveInt = 10,
        input_size: tuple[PositiveInt, PositiveInt] = (32, 32),
        supernet_C: PositiveInt = 16,
        supernet_layers: PositiveInt = 8,
    ) -> None:
        if variant not in _VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; variants: {', '.join(_VARIANTS)}")
        self.variant = variant
        self.ops, self.nodes, self.distinct_inputs = _VARIANTS[variant]
        self.C = C
        self.layers = layers
        self.auxiliary = auxiliary
        self.drop_path_prob = drop_path_prob
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_size = tuple(input_size)
        self.supernet_C = supernet_C
        self.supernet_layers = supernet_layers
        self._choices: dict[str, Choice] = {}
        for cell in CELL_TYPES:
            for i in range(2, 2 + self.nodes):
                for k in (0, 1):
                    low, high = (k, i - 1 + k) if self.distinct_inputs else (0, i)
                    self._choices[f"{cell}.n{i}.in{k}"] = Choice(
                        f"{cell}.n{i}.in{k}", tuple(range(low, high)), description=f"input {k} of {cell} node {i}"
                    )
                    self._choices[f"{cell}.n{i}.op{k}"] = Choice(
                        f"{cell}.n{i}.op{k}", self.ops, description=f"op on input {k} of {cell} node {i}"
                    )
        # Every valid (in0, op0, in1, op1) of node i: the constraint is per node, so sampling
        # each node uniformly from its list samples the space uniformly.
        self._node_options = {
            i: [
                (a, x, b, y)
                for a in range(i)
                for b in range(i)
                for x in self.ops
                for y in self.ops
                if self._ordered(a, x, b, y)
            ]
            for i in range(2, 2 + self.nodes)
        }

    def _ordered(self, a: int, x: str, b: int, y: str) -> bool:
        return a < b if self.distinct_inputs else (a, x) <= (b, y)

    def choices(self) -> Mapping[str, Choice]:
        return self._choices

    def is_valid(self, arch: Arch) -> bool:
        """Each node lists its two slots in order (see the module docstring)."""
        return all(
            self._ordered(
                int(arch[f"{cell}.n{i}.in0"]),
                str(arch[f"{cell}.n{i}.op0"]),
                int(arch[f"{cell}.n{i}.in1"]),
                str(arch[f"{cell}.n{i}.op1"]),
            )
            for cell in CELL_TYPES
            for i in range(2, 2 + self.nodes)
        )

    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it fits this space, else raise naming the bad choice or node."""
        for cell, pairs in self.pairs(arch).items():
            for k in range(0, len(pairs), 2):
                (x, a), (y, b) = pairs[k : k + 2]
                if not self._ordered(a, x, b, y):
                    rule = (
                        "reads two different nodes, the smaller as in0"
                        if self.distinct_inputs
                        else "lists its slots in increasing (input, op) order"
                    )
                    raise InvalidArchError(
                        f"{cell} node {2 + k // 2} has in0={a}, op0={x!r}, in1={b}, op1={y!r}; in the {self.variant} "
                        f"variant each node {rule} (swapping the slots describes the same cell)"
                    )
        return super().validate(arch)

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly drawn valid arch (each node uniform over its valid slot pairs)."""
        values: dict[str, str | int] = {}
        for cell in CELL_TYPES:
            for i, options in self._node_options.items():
                a, x, b, y = options[int(rng.integers(len(options)))]
                values.update(_node_values(cell, i, a, x, b, y))
        return Arch({name: values[name] for name in self._choices})

    def size(self) -> int:
        """How many valid archs (distinct cell pairs) the space holds."""
        return math.prod(len(options) for options in self._node_options.values()) ** len(CELL_TYPES)

    def pairs(self, arch: Arch) -> dict[str, tuple[Pair, ...]]:
        """Each cell's ``(op, input)`` pairs in slot order, after checking every choice has one
        of its candidates (but not :meth:`is_valid`'s ordering)."""
        missing = [name for name in self._choices if name not in arch]
        if missing:
            raise InvalidArchError(f"arch is missing choice(s) {', '.join(map(repr, missing))}")
        for name, choice in self._choices.items():
            choice.index(arch[name])
        return {
            cell: tuple(
                (str(arch[f"{cell}.n{i}.op{k}"]), int(arch[f"{cell}.n{i}.in{k}"]))
                for i in range(2, 2 + self.nodes)
                for k in (0, 1)
            )
            for cell in CELL_TYPES
        }

    def paths(self, arch: Arch) -> dict[str, Path]:
        """Per cell type, the supernet path of ``arch``: per node its two ``(input, op index)``,
        op indices among the edges' candidates ``("none", *ops)``."""
        index = {op: 1 + k for k, op in enumerate(self.ops)}
        paths = {}
        for cell, pairs in self.pairs(arch).items():
            slots = [(source, index[op]) for op, source in pairs]
            paths[cell] = tuple((slots[k], slots[k + 1]) for k in range(0, len(slots), 2))
        return paths

    def to_genotype(self, arch: Arch) -> Genotype:
        """The genotype of a valid arch (concatenating every intermediate node)."""
        self.validate(arch)
        return self._genotype(arch)

    def _genotype(self, arch: Arch) -> Genotype:
        pairs = self.pairs(arch)
        concat = tuple(range(2, 2 + self.nodes))
        return Genotype(pairs["normal"], concat, pairs["reduce"], concat)

    def from_genotype(self, genotype: Genotype) -> Arch:
        """The arch of ``genotype``, which must fit this variant (node count, ops, concat,
        distinct inputs for ``darts``); each node's pairs may come in either order."""
        concat = tuple(range(2, 2 + self.nodes))
        values: dict[str, str | int] = {}
        for cell in CELL_TYPES:
            pairs = genotype.cell(cell)
            if len(pairs) != 2 * self.nodes:
                raise InvalidArchError(
                    f"genotype {cell} has {len(pairs) // 2} nodes; cells of the {self.variant} variant have {self.nodes}"
                )
            if genotype.concat(cell) != concat:
                raise InvalidArchError(
                    f"genotype {cell}_concat is {list(genotype.concat(cell))}; cells of this space concatenate "
                    f"every intermediate node, {list(concat)}"
                )
            for k, (op, source) in enumerate(pairs):
                if op not in self.ops:
                    raise InvalidArchError(
                        f"genotype {cell}[{k}] = {(op, source)!r}: op {op!r} is not in the {self.variant} variant's "
                        f"ops: {', '.join(self.ops)}"
                    )
            for k in range(0, len(pairs), 2):
                (x, a), (y, b) = sorted(pairs[k : k + 2], key=lambda pair: (pair[1], pair[0]))
                i = 2 + k // 2
                if self.distinct_inputs and a == b:
                    raise InvalidArchError(
                        f"genotype {cell}[{k}] and {cell}[{k + 1}] both read node {a}; in the {self.variant} "
                        f"variant the two inputs of a node are different nodes"
                    )
                values.update(_node_values(cell, i, a, x, b, y))
        return self.validate(Arch({name: values[name] for name in self._choices}))

    def parse(self, text: str) -> Arch:
        """Read a genotype (``Genotype(normal=[...], ...)``), a published genotype's name
        (``"DARTS_V2"``, see :data:`~nasforge.spaces.genotypes.GENOTYPES`) or the JSON form."""
        text = text.strip()
        if text.startswith("{"):
            return super().parse(text)
        genotype = get_genotype(text) if text.isidentifier() else parse_genotype(text)
        return self.from_genotype(genotype)

    def format(self, arch: Arch) -> str:
        """The genotype notation of ``arch`` (of a valid arch: each node's pairs in canonical order)."""
        return str(self._genotype(arch))

    def build(self, arch: Arch) -> nn.Module:
        """The evaluation network (:func:`darts_network`) of ``arch`` with this space's options."""
        return darts_network(
            self.to_genotype(arch),
            C=self.C,
            layers=self.layers,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            auxiliary=self.auxiliary,
            drop_path_prob=self.drop_path_prob,
            input_size=self.input_size,  # type: ignore[arg-type]
        )

    def supernet(self, partial_channels: int = 1, layers: int | None = None) -> DartsSupernet:
        """The DARTS search network over this space (``supernet_C``, ``supernet_layers`` cells, or
        ``layers`` where given: P-DARTS' stages deepen it).

        ``partial_channels=K > 1`` builds PC-DARTS' search network (Xu et al. 2020): every edge
        a :class:`~nasforge.supernet.partial.PartialChannelChoice` over candidates of ``C / K``
        channels; exported children keep the partial-channel edges of the path.
        """
        network = DartsSearchNetwork(
            self.nodes,
            ("none", *self.ops),
            self.supernet_C,
            self.supernet_layers if layers is None else layers,
            self.in_channels,
            self.num_classes,
            partial_channels,
        )
        return DartsSupernet(network, self)

    def edge_choices(self) -> dict[str, Choice]:
        """The supernet's edges, for differentiable strategies: one choice per ``(cell type,
        node i, input j)`` named ``"normal.{i}<-{j}"``, over ``("none", *ops)``.

        A differentiable strategy keeps one weight vector (DARTS' alphas) per edge choice and
        hands ``{name: weights}`` to :meth:`DartsSupernet.set_weights`; :meth:`derive` turns them
        into an arch of this space.
        """
        ops = ("none", *self.ops)
        return {
            _edge_name(cell, i, j): Choice(
                _edge_name(cell, i, j), ops, description=f"edge into {cell} node {i} from node {j}"
            )
            for cell in CELL_TYPES
            for i in range(2, 2 + self.nodes)
            for j in range(i)
        }

    def derive(self, weights: Mapping[str, Tensor | Sequence[float]]) -> Arch:
        """DARTS' discretisation (Liu et al. 2019, Sec. 2.4): each node keeps its two incoming
        edges with the strongest non-``none`` op weight, and on each the strongest non-``none``
        op. Ties go to the earlier node and the earlier op, as in DARTS' code.
        """
        values: dict[str, str | int] = {}
        size = len(self.ops) + 1
        for cell in CELL_TYPES:
            for i in range(2, 2 + self.nodes):
                best: list[tuple[float, int, str]] = []
                for j in range(i):
                    name = _edge_name(cell, i, j)
                    if name not in weights:
                        raise KeyError(f"no weights for edge {name!r}")
                    w = torch.as_tensor(weights[name]).detach().cpu().reshape(-1).tolist()
                    if len(w) != size:
                        raise ValueError(f"edge {name!r}: expected {size} weights (none first), got {len(w)}")
                    k = max(range(1, size), key=lambda k: (w[k], -k))
                    best.append((w[k], j, self.ops[k - 1]))
                (_, a, x), (_, b, y) = sorted(sorted(best, key=lambda e: (-e[0], e[1]))[:2], key=lambda e: e[1])
                values.update(_node_values(cell, i, a, x, b, y))
        return self.validate(Arch({name: values[name] for name in self._choices}))
