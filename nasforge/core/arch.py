"""`Choice` and `Arch`: the vocabulary every component speaks.

A search space is a set of named :class:`Choice` objects; one point of the space is an
:class:`Arch`, an immutable mapping from choice name to the chosen value. Nothing else travels
between strategies, estimators and spaces.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from nasforge.core.errors import InvalidArchError

__all__ = ["Value", "Choice", "Arch"]

#: A value a choice can take: JSON scalars only, so an arch always round-trips through text.
Value = str | int | float | bool


@dataclass(frozen=True)
class Choice:
    """One named decision and its candidates.

    Args:
        name: unique label within the space (e.g. ``"edge_1<-0"``, ``"stage2.kernel"``).
        candidates: the allowed values, in a fixed order (an op name, an input index, a width).
        ordered: True when neighbouring candidates are similar (widths, kernel sizes), so
            strategies may treat the choice as ordinal; False for categorical choices (ops).
        description: a short human-readable note shown by ``nasforge registry`` and in logs.
    """

    name: str
    candidates: tuple[Value, ...]
    ordered: bool = False
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if not self.name:
            raise ValueError("a Choice needs a non-empty name")
        if not self.candidates:
            raise ValueError(f"Choice {self.name!r} has no candidates")
        for value in self.candidates:
            if not isinstance(value, (str, int, float, bool)):
                raise TypeError(
                    f"Choice {self.name!r}: candidate {value!r} is a {type(value).__name__}; "
                    "candidates must be str, int, float or bool"
                )
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"Choice {self.name!r} has duplicate candidates: {self.candidates}")

    def __len__(self) -> int:
        return len(self.candidates)

    def index(self, value: Value) -> int:
        """Position of ``value`` among the candidates; raises naming the allowed values."""
        for i, candidate in enumerate(self.candidates):
            if candidate == value and type(candidate) is type(value):
                return i
        for i, candidate in enumerate(self.candidates):  # 3 == 3.0, but never True == 1
            if candidate == value and not isinstance(value, bool) and not isinstance(candidate, bool):
                return i
        raise InvalidArchError(
            f"{value!r} is not a candidate of choice {self.name!r}; allowed: "
            + ", ".join(repr(c) for c in self.candidates)
        )

    def sample(self, rng: np.random.Generator) -> Value:
        """One candidate drawn uniformly."""
        return self.candidates[int(rng.integers(len(self.candidates)))]


class Arch(Mapping[str, Value]):
    """One point in a search space: an immutable, hashable ``choice name -> value`` mapping.

    Equality and hashing ignore key order. ``str(arch)`` is canonical JSON (keys in the order
    given) and ``Arch.parse(str(arch)) == arch`` always holds. Spaces with a notation of their
    own (NAS-Bench-201 strings, DARTS genotypes) add ``space.parse`` / ``space.format``.
    """

    __slots__ = ("_items", "_hash")

    def __init__(self, values: Mapping[str, Value] | Sequence[tuple[str, Value]] = ()) -> None:
        items = dict(values)
        for key, value in items.items():
            if not isinstance(key, str):
                raise TypeError(f"Arch keys must be choice names (str), got {key!r}")
            if not isinstance(value, (str, int, float, bool)):
                raise TypeError(
                    f"Arch value for {key!r} is {value!r} ({type(value).__name__}); "
                    "values must be str, int, float or bool"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"Arch value for {key!r} is not finite: {value!r}")
        self._items: dict[str, Value] = items
        self._hash: int | None = None

    def __getitem__(self, key: str) -> Value:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Arch):
            return self._items == other._items and all(
                isinstance(v, bool) == isinstance(other._items[k], bool) for k, v in self._items.items()
            )
        return NotImplemented

    def __repr__(self) -> str:
        return f"Arch({self._items!r})"

    def __str__(self) -> str:
        return json.dumps(self._items, separators=(", ", ": "))

    def to_dict(self) -> dict[str, Value]:
        """A plain, mutable copy (for JSON, YAML and the store)."""
        return dict(self._items)

    def replace(self, **changes: Value) -> Arch:
        """A new arch with some choices changed (the original is never mutated)."""
        return Arch({**self._items, **changes})

    def with_value(self, name: str, value: Value) -> Arch:
        """A new arch with choice ``name`` set to ``value`` (names need not be identifiers)."""
        return Arch({**self._items, name: value})

    @classmethod
    def parse(cls, text: str) -> Arch:
        """Inverse of ``str(arch)``: parse the JSON object form."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArchError(f"cannot parse arch text {text!r}: {exc.msg} at position {exc.pos}") from None
        if not isinstance(values, dict):
            raise InvalidArchError(f"arch text must be a JSON object of choice -> value, got {text!r}")
        try:
            return cls(values)
        except (TypeError, ValueError) as exc:
            raise InvalidArchError(str(exc)) from None
