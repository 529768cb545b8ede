"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020), built faithfully to the benchmark.

A cell is a DAG of 4 nodes: node 0 is the cell input, node ``i`` sums one op applied to each
earlier node, node 3 is the output. The 6 edges ``"1<-0", "2<-0", "2<-1", "3<-0", "3<-1",
"3<-2"`` each pick one of 5 ops, so the space holds 5**6 = 15,625 cells. The network is a 3x3
conv stem, three stages of ``N`` identical cells at ``C``, ``2C`` and ``4C`` channels joined by
residual reduction blocks, then BN-ReLU, global average pooling and a linear classifier. With
the defaults (C=16, N=5, 10 classes, 32x32 inputs) it is the benchmark's CIFAR-10 network,
parameter for parameter.

Archs read and print in the benchmark's own notation, one ``|op~input|`` per edge and ``+``
between nodes::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from pydantic import PositiveInt
from torch import nn

from nasforge.core.arch import Arch, Choice
from nasforge.core.errors import InvalidArchError
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace
from nasforge.nn.mixed import MixedOp, Supernet
from nasforge.nn.ops import OPS, ResNetBasicBlock
from nasforge.nn.partial import PartialChannelChoice, partial_width

__all__ = ["NB201_OPS", "NB201_EDGES", "NB201Space", "NB201Cell", "NB201Network"]

#: The benchmark's candidate ops, in its own order.
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

_NUM_NODES = 4
#: ``(node, input node)`` of every edge, in the benchmark's edge order.
_EDGE_ENDS: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, _NUM_NODES) for j in range(i))
#: The choice names, one per edge: ``"node<-input"``.
NB201_EDGES: tuple[str, ...] = tuple(f"{i}<-{j}" for i, j in _EDGE_ENDS)


class NB201Cell(nn.Module):
    """One NB201 cell: ``node_i = sum_j op_(i<-j)(node_j)``, the output is the last node.

    Args:
        ops: one op name per edge, in :data:`NB201_EDGES` order.
        C: channels of the cell's input, its nodes and its output.
    """

    def __init__(self, ops: Sequence[str], C: int) -> None:
        super().__init__()
        self.C = C
        self.edge_names = NB201_EDGES
        self.edges = nn.ModuleList(OPS[op](C, C, 1) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for i in range(1, _NUM_NODES):
            node = self.edges[k](nodes[0])
            for j in range(1, i):
                node = node + self.edges[k + j](nodes[j])
            k += i
            nodes.append(node)
        return nodes[-1]


class NB201Network(nn.Module):
    """The NB201 macro skeleton around one cell genotype; returns class logits.

    Args:
        ops: the cell, one op name per edge in :data:`NB201_EDGES` order.
        C: channels of the first stage (the others have ``2C`` and ``4C``).
        N: cells per stage.
        in_channels: channels of the input images.
        num_classes: outputs of the classifier.
    """

    def __init__(
        self, ops: Sequence[str], C: int = 16, N: int = 5, in_channels: int = 3, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                layers.append(ResNetBasicBlock(width // 2, width, stride=2))
            layers.extend(NB201Cell(ops, width) for _ in range(N))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))


@register("space", "nb201", tags=("cell", "supernet"))
class NB201Space(SearchSpace):
    """NAS-Bench-201: 6 edges of a 4-node cell, each one of 5 ops (15,625 cells).

    Args:
        C: channels of the first stage (16 in the benchmark).
        N: cells per stage (5 in the benchmark).
        in_channels: channels of the input images (3 for CIFAR, 1 for digits).
        num_classes: outputs of the classifier.
        ops: the candidate ops, a subset of :data:`NB201_OPS`; kept in the benchmark's order
            whatever order they are given in.

    Example:
        >>> space = NB201Space()
        >>> arch = space.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|")
        >>> arch["2<-1"]
        'skip_connect'
        >>> space.format(arch) == "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
        True
    """

    supernet_options: ClassVar[frozenset[str]] = frozenset({"partial_channels", "affine"})

    def __init__(
        self,
        C: PositiveInt = 16,
        N: PositiveInt = 5,
        in_channels: PositiveInt = 3,
        num_classes: PositiveInt = 10,
        ops: tuple[str, ...] = NB201_OPS,
    ) -> None:
        unknown = [op for op in ops if op not in NB201_OPS]
        if unknown:
            raise ValueError(f"unknown NB201 op(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(NB201_OPS)}")
        if not ops:
            raise ValueError(f"ops must name at least one op; allowed: {', '.join(NB201_OPS)}")
        if len(set(ops)) != len(ops):
            raise ValueError(f"ops lists an op more than once: {', '.join(ops)}")
        self.C = C
        self.N = N
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.ops = tuple(op for op in NB201_OPS if op in ops)
        self._choices = {
            name: Choice(name, self.ops, description=f"op on the edge into node {i} from node {j}")
            for name, (i, j) in zip(NB201_EDGES, _EDGE_ENDS, strict=True)
        }

    def choices(self) -> Mapping[str, Choice]:
        return self._choices

    def build(self, arch: Arch) -> nn.Module:
        self.validate(arch)
        ops = [str(arch[name]) for name in NB201_EDGES]
        return NB201Network(ops, self.C, self.N, self.in_channels, self.num_classes)

    def supernet(self, partial_channels: int = 1, affine: bool = True) -> Supernet:
        """The weight-sharing network of every cell of this space (for one-shot estimators).

        It is :class:`NB201Network` with each edge of each cell a :class:`MixedOp` named
        after the edge (``"1<-0"``, ...) over this space's ops; all cells follow the same arch,
        as in the benchmark. ``supernet.export(arch)`` is an :class:`NB201Network` whose
        ``state_dict`` loads into ``space.build(arch)`` unchanged. Weights are initialised from
        torch's global generator, like :meth:`build`.

        With ``partial_channels=K > 1`` each edge is a
        :class:`~nasforge.nn.partial.PartialChannelChoice` (PC-DARTS, Xu et al. 2020):
        candidates of ``C / K`` channels, the other channels bypassed; its exported children keep
        that structure, so they no longer load into :meth:`build`'s network.

        ``affine=False`` (what the one-shot and differentiable estimators ask for by default;
        this method's default is ``True``, matching :meth:`build`) gives the candidates' batch norms no learnable scale and
        shift, as NAS-Bench-201's search cells (``SearchCell(..., affine=False, ...)`` in
        ``lib/models/cell_searchs/search_cells.py``; every algorithm of
        ``exps/NAS-Bench-201-algos/`` passes ``"affine": False``, github.com/D-X-Y/AutoDL-Projects).
        Such children load into :meth:`build` after
        :func:`~nasforge.estimators.supernet.inherited_child` gives them scale 1 and shift 0;
        ``affine=True`` exports children whose ``state_dict`` loads as is.
        """
        network = NB201Network([self.ops[0]] * len(NB201_EDGES), self.C, self.N, self.in_channels, self.num_classes)
        for cell in network.cells:
            if isinstance(cell, NB201Cell):
                cell.edges = nn.ModuleList(self._edge(name, cell.C, partial_channels, affine) for name in NB201_EDGES)
        return Supernet(network)

    def _edge(self, name: str, C: int, k: int, affine: bool) -> MixedOp:
        if k == 1:
            return MixedOp(name, {op: OPS[op](C, C, 1, affine=affine) for op in self.ops})
        width = partial_width(C, k)
        return PartialChannelChoice(name, {op: OPS[op](width, width, 1, affine=affine) for op in self.ops}, k)

    def parse(self, text: str) -> Arch:
        """Read NB201 notation (``|op~input|+|...|``) or the generic JSON form of an arch."""
        text = text.strip()
        if text.startswith("{"):
            return super().parse(text)
        nodes = text.split("+")
        if len(nodes) != _NUM_NODES - 1:
            raise InvalidArchError(
                f"NB201 arch {text!r} has {len(nodes)} node(s) separated by '+'; "
                f"expected {_NUM_NODES - 1}, like |op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
            )
        values: dict[str, str] = {}
        for node, part in enumerate(nodes, start=1):
            values.update(self._parse_node(node, part))
        return self.validate(Arch({name: values[name] for name in NB201_EDGES}))

    def _parse_node(self, node: int, part: str) -> dict[str, str]:
        allowed_inputs = ", ".join(str(j) for j in range(node))
        if len(part) < 2 or not (part.startswith("|") and part.endswith("|")):
            raise InvalidArchError(
                f"NB201 node {node} is written {part!r}; each node must be |op~input|...| "
                f"with one entry for each input {allowed_inputs}"
            )
        found: dict[str, str] = {}
        for entry in part[1:-1].split("|"):
            op, sep, source = entry.partition("~")
            if not sep:
                raise InvalidArchError(f"NB201 node {node}: entry {entry!r} must be op~input, e.g. nor_conv_3x3~0")
            if not source.isdecimal() or int(source) >= node:
                raise InvalidArchError(
                    f"NB201 node {node}: entry {entry!r} has input {source!r}; node {node} takes inputs {allowed_inputs}"
                )
            name = f"{node}<-{int(source)}"
            if name in found:
                raise InvalidArchError(f"NB201 node {node}: input {int(source)} appears more than once in {part!r}")
            if op not in self.ops:
                raise InvalidArchError(
                    f"NB201 node {node}, input {int(source)}: unknown op {op!r}; allowed: {', '.join(self.ops)}"
                )
            found[name] = op
        missing = [str(j) for j in range(node) if f"{node}<-{j}" not in found]
        if missing:
            raise InvalidArchError(f"NB201 node {node} ({part!r}) is missing input(s) {', '.join(missing)}")
        return found

    def format(self, arch: Arch) -> str:
        """The benchmark's notation, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``."""
        self.validate(arch)
        return "+".join(
            "|" + "|".join(f"{arch[f'{i}<-{j}']}~{j}" for j in range(i)) + "|" for i in range(1, _NUM_NODES)
        )
