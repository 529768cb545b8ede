"""DARTS-style cell genotypes: the papers' notation, and the published cells by name.

A genotype describes a normal and a reduction cell the way the DARTS code (Liu et al., ICLR
2019) and the papers built on it print them::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5],
             reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ...], reduce_concat=[2, 3, 4, 5])

Nodes 0 and 1 of a cell are the outputs of the two previous cells; entries ``2k`` and ``2k+1``
of ``normal`` (or ``reduce``) are the two ``(op, input node)`` pairs summed into node ``k+2``;
the cell's output concatenates the nodes listed in ``*_concat``. :func:`parse_genotype` reads
that text (also with ``range(2, 6)`` for a concat, and with a leading ``NAME =``, so a line of
a paper's ``genotypes.py`` can be pasted as it is) without evaluating it; ``str(genotype)``
prints it back.

:data:`GENOTYPES` holds the cells of the papers that report CIFAR-10 results on the DARTS
evaluation network, copied from each paper's public code: DARTS (first and second order),
ENAS (as transcribed by GDAS' authors, 5 nodes), PC-DARTS, P-DARTS, GDAS, SNAS (moderate
constraint), and the NASNet-A and AmoebaNet-A cells as the DARTS code transcribes them (5
nodes, concatenating only some nodes, with ``sep_conv_7x7`` and ``conv_7x1_1x7``).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from nasforge.core.errors import InvalidArchError
from nasforge.nn.ops import OPS

__all__ = ["Genotype", "CELL_TYPES", "parse_genotype", "GENOTYPES", "get_genotype"]

#: The two cell types of a genotype, in the order the notation lists them.
CELL_TYPES: tuple[str, str] = ("normal", "reduce")

Pair = tuple[str, int]


@dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell as ``(op, input node)`` pairs, two per intermediate node.

    Lists are accepted and stored as tuples. The structure is checked on construction: an even
    number of pairs, ops from :data:`~nasforge.nn.ops.OPS`, node ``i`` reading only
    nodes ``0..i-1``, and concat lists naming existing nodes once each; a mistake raises
    :class:`InvalidArchError` naming the entry, e.g. ``normal[5]``.

    Example:
        >>> g = parse_genotype("Genotype(normal=[('skip_connect', 0), ('sep_conv_3x3', 1)], "
        ...                    "normal_concat=[2], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], "
        ...                    "reduce_concat=range(2, 3))")
        >>> g.nodes("normal"), g.cell("reduce")[1]
        (1, ('max_pool_3x3', 1))
        >>> str(g)
        "Genotype(normal=[('skip_connect', 0), ('sep_conv_3x3', 1)], normal_concat=[2], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])"
    """

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for cell in CELL_TYPES:
            pairs = tuple(_pair(f"{cell}[{k}]", entry) for k, entry in enumerate(getattr(self, cell)))
            concat = tuple(getattr(self, f"{cell}_concat"))
            _check_cell(cell, pairs, concat)
            object.__setattr__(self, cell, pairs)
            object.__setattr__(self, f"{cell}_concat", concat)

    def cell(self, cell_type: str) -> tuple[Pair, ...]:
        """The ``(op, input)`` pairs of ``"normal"`` or ``"reduce"``."""
        return getattr(self, _cell_type(cell_type))  # type: ignore[no-any-return]

    def concat(self, cell_type: str) -> tuple[int, ...]:
        """The nodes concatenated into the output of ``"normal"`` or ``"reduce"``."""
        return getattr(self, f"{_cell_type(cell_type)}_concat")  # type: ignore[no-any-return]

    def nodes(self, cell_type: str) -> int:
        """How many intermediate nodes the cell has."""
        return len(self.cell(cell_type)) // 2

    def canonical(self) -> Genotype:
        """The same cells with each node's two pairs sorted by ``(input, op)``.

        A node sums its two pairs, so their order does not change the network; two genotypes
        describe the same cells exactly when their canonical forms are equal.
        """
        return Genotype(_sorted_pairs(self.normal), self.normal_concat, _sorted_pairs(self.reduce), self.reduce_concat)

    def __str__(self) -> str:
        parts = []
        for cell in CELL_TYPES:
            parts.append(f"{cell}={list(self.cell(cell))!r}")
            parts.append(f"{cell}_concat={list(self.concat(cell))!r}")
        return f"Genotype({', '.join(parts)})"


def _cell_type(cell_type: str) -> str:
    if cell_type not in CELL_TYPES:
        raise ValueError(f"cell type must be one of {', '.join(CELL_TYPES)}, got {cell_type!r}")
    return cell_type


def _sorted_pairs(pairs: Sequence[Pair]) -> tuple[Pair, ...]:
    out: list[Pair] = []
    for k in range(0, len(pairs), 2):
        out.extend(sorted(pairs[k : k + 2], key=lambda pair: (pair[1], pair[0])))
    return tuple(out)


def _pair(where: str, entry: object) -> Pair:
    if (
        not isinstance(entry, (tuple, list))
        or len(entry) != 2
        or not isinstance(entry[0], str)
        or not isinstance(entry[1], int)
        or isinstance(entry[1], bool)
    ):
        raise InvalidArchError(
            f"genotype {where} is {entry!r}; expected an (op, input node) pair like ('sep_conv_3x3', 0)"
        )
    return entry[0], entry[1]


def _check_cell(cell: str, pairs: tuple[Pair, ...], concat: tuple[int, ...]) -> None:
    if not pairs or len(pairs) % 2:
        raise InvalidArchError(
            f"genotype {cell} has {len(pairs)} (op, input) pair(s); each intermediate node takes exactly two, "
            "so a cell needs a positive, even number"
        )
    for k, (op, source) in enumerate(pairs):
        node = 2 + k // 2
        if op not in OPS:
            raise InvalidArchError(
                f"genotype {cell}[{k}] = {(op, source)!r}: unknown op {op!r}; known ops: {', '.join(OPS)}"
            )
        if not 0 <= source < node:
            raise InvalidArchError(
                f"genotype {cell}[{k}] = {(op, source)!r}: input {source} does not exist yet; entries {cell}[{k - k % 2}] "
                f"and {cell}[{k - k % 2 + 1}] feed node {node}, which can read nodes 0..{node - 1}"
            )
    nodes = 2 + len(pairs) // 2
    if not concat:
        raise InvalidArchError(f"genotype {cell}_concat is empty; it must name the nodes the cell outputs")
    for index in concat:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < nodes:
            raise InvalidArchError(
                f"genotype {cell}_concat names node {index!r}; the {cell} cell has nodes 0..{nodes - 1}"
            )
    if len(set(concat)) != len(concat):
        raise InvalidArchError(f"genotype {cell}_concat {list(concat)} names a node more than once")


_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


def parse_genotype(text: str) -> Genotype:
    """Read a genotype in the DARTS papers' notation (the text is parsed, never evaluated).

    Accepts ``Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])``
    with concat lists or ``range(a, b)``, positional fields in that order, and an optional
    leading ``NAME =``. Raises :class:`InvalidArchError` naming the bad part.
    """
    try:
        module = ast.parse(text.strip(), mode="exec")
    except SyntaxError as exc:
        raise InvalidArchError(
            f"cannot read genotype text: {exc.msg} at line {exc.lineno}, column {exc.offset}; expected "
            "Genotype(normal=[('op', input), ...], normal_concat=[...], reduce=[...], reduce_concat=[...])"
        ) from None
    body = module.body
    node: ast.AST | None = None
    if len(body) == 1 and isinstance(body[0], ast.Expr):
        node = body[0].value
    elif len(body) == 1 and isinstance(body[0], ast.Assign) and len(body[0].targets) == 1:
        node = body[0].value
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Genotype"):
        raise InvalidArchError(
            f"genotype text {_clip(text)!r} is not a Genotype(...) call; expected "
            "Genotype(normal=[('op', input), ...], normal_concat=[...], reduce=[...], reduce_concat=[...])"
        )
    if len(node.args) > len(_FIELDS):
        raise InvalidArchError(
            f"Genotype(...) takes {len(_FIELDS)} fields ({', '.join(_FIELDS)}), got {len(node.args)} positional"
        )
    fields: dict[str, ast.expr] = dict(zip(_FIELDS, node.args, strict=False))
    for keyword in node.keywords:
        if keyword.arg not in _FIELDS:
            raise InvalidArchError(f"Genotype(...) has unknown field {keyword.arg!r}; fields: {', '.join(_FIELDS)}")
        if keyword.arg in fields:
            raise InvalidArchError(f"Genotype(...) gives field {keyword.arg!r} twice")
        fields[keyword.arg] = keyword.value
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise InvalidArchError(f"Genotype(...) is missing field(s) {', '.join(missing)}")
    values: dict[str, tuple] = {}
    for cell in CELL_TYPES:
        pairs = _literal(cell, fields[cell], text, _PAIRS)
        if not isinstance(pairs, (list, tuple)):
            raise _bad(cell, fields[cell], text, _PAIRS)
        values[cell] = tuple(pairs)
        values[f"{cell}_concat"] = _concat(f"{cell}_concat", fields[f"{cell}_concat"], text)
    return Genotype(**values)


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _literal(where: str, node: ast.expr, text: str, expected: str) -> object:
    """The value of a literal expression; anything else raises naming the field."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        raise _bad(where, node, text, expected) from None


def _bad(where: str, node: ast.expr, text: str, expected: str) -> InvalidArchError:
    segment = ast.get_source_segment(text.strip(), node) or ""
    return InvalidArchError(f"genotype {where} = {_clip(segment)!r}; expected {expected}")


_PAIRS = "a list of (op, input node) pairs like [('sep_conv_3x3', 0), ('skip_connect', 1)]"
_NODES = "a list of node indices or range(a, b)"


def _concat(where: str, node: ast.expr, text: str) -> tuple[int, ...]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" and not node.keywords:
        bounds = [_literal(where, arg, text, _NODES) for arg in node.args]
        if 1 <= len(bounds) <= 3 and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            return tuple(range(*bounds))  # type: ignore[arg-type]
    else:
        value = _literal(where, node, text, _NODES)
        if isinstance(value, (list, tuple)):
            return tuple(value)
    raise _bad(where, node, text, _NODES)


def _genotype(normal: list[Pair], normal_concat: list[int], reduce: list[Pair], reduce_concat: list[int]) -> Genotype:
    """A genotype from the lists the papers' code writes."""
    return Genotype(tuple(normal), tuple(normal_concat), tuple(reduce), tuple(reduce_concat))


_ALL4 = [2, 3, 4, 5]

# Pairs four to a line, like the papers' code.
# fmt: off
#: Published cells by name (see the module docstring for their sources).
GENOTYPES: Mapping[str, Genotype] = MappingProxyType(
    {
        # Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019 (first order).
        "DARTS_V1": _genotype(
            [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
             ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
            _ALL4,
            [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
             ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
            _ALL4,
        ),
        # DARTS, second order: the cell of the paper's Figure 4 and Table 1 (3.3M parameters).
        "DARTS_V2": _genotype(
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
             ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
            _ALL4,
            [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
             ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
            _ALL4,
        ),
        # Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018:
        # the micro cell (5 nodes), as GDAS' code (Dong & Yang) transcribes it.
        "ENAS": _genotype(
            [("sep_conv_3x3", 1), ("skip_connect", 1), ("sep_conv_5x5", 1), ("skip_connect", 0),
             ("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("avg_pool_3x3", 1),
             ("sep_conv_5x5", 1), ("avg_pool_3x3", 0)],
            [2, 3, 4, 5, 6],
            [("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("avg_pool_3x3", 1),
             ("sep_conv_3x3", 1), ("avg_pool_3x3", 1), ("avg_pool_3x3", 1), ("sep_conv_5x5", 4),
             ("sep_conv_3x3", 5), ("sep_conv_5x5", 0)],
            [2, 3, 4, 5, 6],
        ),
        # Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture
        # Search", ICLR 2020 (PC_DARTS_cifar).
        "PC_DARTS": _genotype(
            [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
             ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
            _ALL4,
            [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
             ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
            _ALL4,
        ),
        # Chen et al., "Progressive Differentiable Architecture Search", ICCV 2019.
        "PDARTS": _genotype(
            [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
             ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
            _ALL4,
            [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
             ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
            _ALL4,
        ),
        # Dong & Yang, "Searching for a Robust Neural Architecture in Four GPU Hours", CVPR 2019
        # (GDAS_V1 of the authors' code).
        "GDAS": _genotype(
            [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_5x5", 2),
             ("sep_conv_3x3", 3), ("skip_connect", 0), ("sep_conv_5x5", 4), ("sep_conv_3x3", 3)],
            _ALL4,
            [("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
             ("dil_conv_5x5", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_5x5", 1)],
            _ALL4,
        ),
        # Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019 (moderate constraint).
        "SNAS": _genotype(
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 1),
             ("skip_connect", 1), ("skip_connect", 0), ("skip_connect", 0), ("sep_conv_3x3", 1)],
            _ALL4,
            [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 1), ("skip_connect", 2),
             ("skip_connect", 2), ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("dil_conv_5x5", 2)],
            _ALL4,
        ),
        # Zoph et al., "Learning Transferable Architectures for Scalable Image Recognition",
        # CVPR 2018 (NASNet-A), as the DARTS code transcribes it.
        "NASNet": _genotype(
            [("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
             ("avg_pool_3x3", 1), ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
             ("sep_conv_3x3", 1), ("skip_connect", 1)],
            [2, 3, 4, 5, 6],
            [("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
             ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2),
             ("sep_conv_3x3", 2), ("max_pool_3x3", 1)],
            [4, 5, 6],
        ),
        # Real et al., "Regularized Evolution for Image Classifier Architecture Search", AAAI
        # 2019 (AmoebaNet-A), as the DARTS code transcribes it.
        "AmoebaNet": _genotype(
            [("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
             ("sep_conv_3x3", 0), ("avg_pool_3x3", 3), ("sep_conv_3x3", 1), ("skip_connect", 1),
             ("skip_connect", 0), ("avg_pool_3x3", 1)],
            [4, 5, 6],
            [("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_7x7", 2),
             ("sep_conv_7x7", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
             ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)],
            [3, 4, 6],
        ),
    }
)
# fmt: on


def get_genotype(name: str) -> Genotype:
    """A published genotype by name; an unknown name raises listing the known ones."""
    try:
        return GENOTYPES[name]
    except KeyError:
        raise InvalidArchError(f"unknown genotype {name!r}; known genotypes: {', '.join(GENOTYPES)}") from None
