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
every earlier node through a :class:`MixedOp` over ``none`` and the variant's ops. See
:class:`DartsSupernet` for its two modes and the weights differentiable methods hand it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from nasforge.core.arch import Arch, Choice
from nasforge.core.errors import InvalidArchError
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace
from nasforge.spaces.darts_network import Pair, darts_network
from nasforge.spaces.darts_supernet import DartsSearchNetwork, DartsSupernet, Path, edge_name, node_values
from nasforge.spaces.genotypes import CELL_TYPES, Genotype, get_genotype, parse_genotype

__all__ = ["DARTS_OPS", "ENAS_OPS", "DartsSpace"]

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

    supernet_options: ClassVar[frozenset[str]] = frozenset({"partial_channels", "layers"})

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
                values.update(node_values(cell, i, a, x, b, y))
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
                values.update(node_values(cell, i, a, x, b, y))
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
        a :class:`~nasforge.nn.partial.PartialChannelChoice` over candidates of ``C / K``
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
            edge_name(cell, i, j): Choice(
                edge_name(cell, i, j), ops, description=f"edge into {cell} node {i} from node {j}"
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
                    name = edge_name(cell, i, j)
                    if name not in weights:
                        raise KeyError(f"no weights for edge {name!r}")
                    w = torch.as_tensor(weights[name]).detach().cpu().reshape(-1).tolist()
                    if len(w) != size:
                        raise ValueError(f"edge {name!r}: expected {size} weights (none first), got {len(w)}")
                    k = max(range(1, size), key=lambda k: (w[k], -k))
                    best.append((w[k], j, self.ops[k - 1]))
                (_, a, x), (_, b, y) = sorted(sorted(best, key=lambda e: (-e[0], e[1]))[:2], key=lambda e: e[1])
                values.update(node_values(cell, i, a, x, b, y))
        return self.validate(Arch({name: values[name] for name in self._choices}))
