"""Fixed-length numeric encodings of architectures, the input of performance predictors.

Encodings are registry components of kind ``encoding`` (``@register("encoding", NAME)``: a class
taking the space, so a plugin can add one), looked up by name with :func:`get_encoder`. The
built-in ones:

- ``onehot`` — one block per choice, one slot per candidate. Works for every space.
- ``adjacency`` — for cell spaces: the labelled adjacency tensor of the cell, one slot per
  (source node, destination node, operation); a ``none`` edge is an absent edge.
- ``path`` — for cell spaces: the path encoding of BANANAS (White et al., 2021, "BANANAS:
  Bayesian Optimization with Neural Architectures for Neural Architecture Search", AAAI), one
  slot per sequence of operations an input -> output path can carry, counting the paths of the
  cell that carry it. A path crossing a ``none`` edge does not exist.

A *cell space* names every choice after an edge of a DAG, ``"dst<-src"`` with integer nodes
(``"2<-1"``), and its candidates are operation names; the smallest node is the cell's input and
the largest its output. NAS-Bench-201 follows that convention.

Example:
    >>> encode = get_encoder("path", space)
    >>> encode(arch).shape, encode([arch, other]).shape
    ((84,), (2, 84))
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Annotated, overload

import numpy as np

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.component import Component
from nasforge.core.errors import ConfigError
from nasforge.core.registry import Registered, register
from nasforge.core.space import SearchSpace

__all__ = [
    "NONE_OP",
    "Encoder",
    "OneHotEncoder",
    "AdjacencyEncoder",
    "PathEncoder",
    "EncodingName",
    "get_encoder",
    "default_encoding",
    "is_cell_space",
]

#: The candidate that stands for "no edge" in a cell space.
NONE_OP = "none"

#: An option naming an encoding: a registered one, or ``auto`` (:func:`default_encoding`).
EncodingName = Annotated[str, Registered("encoding", also=("auto",))]

_EDGE = re.compile(r"^(\d+)<-(\d+)$")


class Encoder(Component, ABC):
    """Maps archs of one space to vectors of length :attr:`size` (float32).

    Call it with one arch for a vector, or with a sequence of archs for a ``(n, size)`` matrix.
    Subclasses implement :meth:`_encode_indices` on the matrix of candidate indices, so encoding
    thousands of candidates is a few NumPy operations.
    """

    size: int

    def __init__(self, space: SearchSpace) -> None:
        self.choices = list(space.choices().values())
        self._lookup = [{value: i for i, value in enumerate(c.candidates)} for c in self.choices]

    def indices(self, archs: Sequence[Arch]) -> np.ndarray:
        """``(n, n_choices)`` matrix of each arch's candidate index per choice."""
        out = np.empty((len(archs), len(self.choices)), dtype=np.int64)
        for col, (choice, lookup) in enumerate(zip(self.choices, self._lookup, strict=True)):
            try:
                out[:, col] = [lookup[arch[choice.name]] for arch in archs]
            except KeyError:  # unknown value: let Choice.index name it
                for arch in archs:
                    choice.index(arch[choice.name])
                raise
        return out

    @overload
    def __call__(self, archs: Arch) -> np.ndarray: ...

    @overload
    def __call__(self, archs: Sequence[Arch]) -> np.ndarray: ...

    def __call__(self, archs: Arch | Sequence[Arch]) -> np.ndarray:
        if isinstance(archs, Arch):
            return self._encode_indices(self.indices([archs]))[0]
        return self._encode_indices(self.indices(list(archs)))

    @abstractmethod
    def _encode_indices(self, idx: np.ndarray) -> np.ndarray:
        """``(n, size)`` encodings of the archs whose candidate indices are the rows of ``idx``."""


@register("encoding", "onehot")
class OneHotEncoder(Encoder):
    """One slot per (choice, candidate): the generic encoding of any space."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        sizes = [len(c) for c in self.choices]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.size = int(sum(sizes))

    def _encode_indices(self, idx: np.ndarray) -> np.ndarray:
        out = np.zeros((len(idx), self.size), dtype=np.float32)
        out[np.arange(len(idx))[:, None], idx + self._offsets] = 1.0
        return out


def is_cell_space(space: SearchSpace) -> bool:
    """True when every choice is an edge ``"dst<-src"`` (src < dst) whose candidates are op names."""
    try:
        _cell_structure(space)
    except ConfigError:
        return False
    return True


def _cell_structure(space: SearchSpace) -> tuple[list[tuple[int, int]], list[str], int, int]:
    """Edges (src, dst) in choice order, the op vocabulary without ``none``, input and output node."""
    edges: list[tuple[int, int]] = []
    ops: list[str] = []
    for name, choice in space.choices().items():
        match = _EDGE.match(name)
        if match is None or int(match.group(2)) >= int(match.group(1)):
            raise ConfigError(
                f"{type(space).__name__} is not a cell space: choice {name!r} does not name an edge "
                "'dst<-src' with integer nodes src < dst; use the 'onehot' encoding for this space"
            )
        if not all(isinstance(c, str) for c in choice.candidates):
            raise ConfigError(
                f"{type(space).__name__} is not a cell space: edge {name!r} has non-operation candidates "
                f"{choice.candidates}; use the 'onehot' encoding for this space"
            )
        edges.append((int(match.group(2)), int(match.group(1))))
        ops += [str(c) for c in choice.candidates if c != NONE_OP and c not in ops]
    if not edges:
        raise ConfigError(f"{type(space).__name__} has no choices to encode")
    nodes = {n for edge in edges for n in edge}
    return edges, ops, min(nodes), max(nodes)


class _CellEncoder(Encoder):
    """Shared set-up of the cell encodings: per edge, candidate index -> op id (-1 for ``none``)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.edges, self.ops, self.input_node, self.output_node = _cell_structure(space)
        op_id = {op: i for i, op in enumerate(self.ops)}
        width = max(len(c) for c in self.choices)
        self._op_of = np.full((len(self.choices), width), -1, dtype=np.int64)
        for e, choice in enumerate(self.choices):
            for i, value in enumerate(choice.candidates):
                self._op_of[e, i] = op_id.get(str(value), -1)

    def op_ids(self, idx: np.ndarray) -> np.ndarray:
        """``(n, n_edges)`` op id per edge, -1 where the edge is ``none``."""
        return self._op_of[np.arange(idx.shape[1]), idx]


@register("encoding", "adjacency")
class AdjacencyEncoder(_CellEncoder):
    """The labelled adjacency tensor: one slot per (src, dst, op) of every edge of the space.

    Unlike ``onehot`` it shares one op vocabulary across edges and has no slot for ``none``: an
    edge without an operation is simply absent, as in an adjacency matrix.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.size = len(self.edges) * len(self.ops)

    def _encode_indices(self, idx: np.ndarray) -> np.ndarray:
        ops = self.op_ids(idx)
        n_ops = len(self.ops)
        out = np.zeros((len(idx), self.size), dtype=np.float32)
        rows, edges = np.nonzero(ops >= 0)
        out[rows, edges * n_ops + ops[rows, edges]] = 1.0
        return out


@register("encoding", "path")
class PathEncoder(_CellEncoder):
    """BANANAS path encoding: how many input -> output paths carry each op sequence.

    Every path of the space's DAG from the input node to the output node with ``L`` edges maps
    the ops along it to one of ``V**L`` slots (``V`` ops besides ``none``); slots for every path
    length the DAG has are concatenated (NAS-Bench-201: 4 + 16 + 64 = 84). White et al. mark a
    slot present or absent; we count, which keeps the information when two paths of a cell carry
    the same sequence.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        edge_of = {edge: e for e, edge in enumerate(self.edges)}
        self.paths = [[edge_of[step] for step in path] for path in self._dag_paths()]
        if not self.paths:
            raise ConfigError(
                f"{type(space).__name__}: no path leads from node {self.input_node} to node {self.output_node}"
            )
        n_ops = len(self.ops)
        lengths = sorted({len(p) for p in self.paths})
        offsets, total = {}, 0
        for length in lengths:
            offsets[length] = total
            total += n_ops**length
        self._offsets = offsets
        self.size = total

    def _dag_paths(self) -> list[list[tuple[int, int]]]:
        outgoing: dict[int, list[int]] = {}
        for src, dst in self.edges:
            outgoing.setdefault(src, []).append(dst)
        found: list[list[tuple[int, int]]] = []
        stack: list[tuple[int, list[tuple[int, int]]]] = [(self.input_node, [])]
        while stack:
            node, path = stack.pop()
            if node == self.output_node:
                found.append(path)
                continue
            for nxt in sorted(outgoing.get(node, [])):
                stack.append((nxt, [*path, (node, nxt)]))
        return sorted(found, key=lambda p: (len(p), p))

    def _encode_indices(self, idx: np.ndarray) -> np.ndarray:
        ops = self.op_ids(idx)
        n_ops = len(self.ops)
        out = np.zeros((len(idx), self.size), dtype=np.float32)
        rows = np.arange(len(idx))
        for path in self.paths:
            on_path = ops[:, path]
            exists = np.all(on_path >= 0, axis=1)
            slot = self._offsets[len(path)] + on_path @ (n_ops ** np.arange(len(path)))
            np.add.at(out, (rows[exists], slot[exists]), 1.0)
        return out

    def describe(self, slot: int) -> str:
        """The op sequence of a slot, input side first, e.g. ``"nor_conv_3x3 > skip_connect"``."""
        for length in sorted(self._offsets, reverse=True):
            if slot >= self._offsets[length]:
                rest = slot - self._offsets[length]
                seq = [self.ops[(rest // len(self.ops) ** j) % len(self.ops)] for j in range(length)]
                return " > ".join(seq)
        raise IndexError(slot)


def default_encoding(space: SearchSpace) -> str:
    """``path`` for cell spaces (what BANANAS found best), ``onehot`` otherwise."""
    return "path" if is_cell_space(space) else "onehot"


def get_encoder(name: str, space: SearchSpace) -> Encoder:
    """The registered encoder ``name`` (``onehot``, ``adjacency``, ``path``, a plugin's) or
    ``auto`` bound to ``space``.

    ``auto`` picks :func:`default_encoding`. Cell encodings raise a :class:`ConfigError` for a
    space whose choices are not edges ``"dst<-src"``.
    """
    if name == "auto":
        name = default_encoding(space)
    encoder = registry.create("encoding", name, {"space": space}, where=f"encoding {name!r}")
    if not isinstance(encoder, Encoder):
        raise ConfigError(f"encoding {name!r} built a {type(encoder).__name__}, not an Encoder")
    return encoder
