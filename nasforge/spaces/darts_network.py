"""The DARTS papers' evaluation network (DARTS' ``NetworkCIFAR``): cells of a genotype, drop-path,
the auxiliary head. :class:`~nasforge.spaces.darts_cells.DartsSpace` builds its archs with
:func:`darts_network`; any genotype builds, including ones outside that space (NASNet, AmoebaNet).

Followed: ``cnn/model.py`` of the DARTS code (github.com/quark0/darts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from nasforge.nn.ops import OPS, FactorizedReduce, ReLUConvBN
from nasforge.spaces.genotypes import CELL_TYPES, Genotype

__all__ = ["drop_path", "DartsCell", "AuxiliaryHead", "DartsNetwork", "darts_network", "halve", "stem", "cell_plan", "Pair"]

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


def stem(in_channels: int, C: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, _STEM_MULTIPLIER * C, 3, padding=1, bias=False),
        nn.BatchNorm2d(_STEM_MULTIPLIER * C),
    )


def cell_plan(C: int, layers: int, multiplier: Mapping[str, int]) -> tuple[list[tuple[int, int, int, bool, bool]], int]:
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
    as its ops are in :data:`~nasforge.nn.ops.OPS`. ``input_size`` only matters for the
    auxiliary head's pooling.
    """
    multiplier = {cell: len(genotype.concat(cell)) for cell in CELL_TYPES}
    plan, C_last = cell_plan(C, layers, multiplier)
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
        size = tuple(halve(s, halvings) for s in input_size)
        head = AuxiliaryHead(C_aux, num_classes, size)  # type: ignore[arg-type]
    return DartsNetwork(
        stem(in_channels, C), cells, nn.Linear(C_last, num_classes), head, auxiliary_index, drop_path_prob
    )


def halve(size: int, times: int) -> int:
    for _ in range(times):
        size = math.ceil(size / 2)
    return size
