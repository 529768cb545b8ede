"""Values picked by a search: :class:`ValueChoice` and the values derived from choices.

NNI's ``ValueChoice`` semantics: a choice among numbers (ints for sizes, floats for rates such as
dropout), and arithmetic on choices (``width * 2``, ``width // 2``, ``a + b``) giving a
:class:`ValueExpr` whose value follows its choices (NNI's value-choice expressions): it adds no
decision of its own, so ``nm.Conv2d(width, width * 2, 3)`` searches one width.

``float(choice)`` and ``int(choice)`` give the current value. A choice is not a number, though:
plain ``torch.nn`` layers cannot take one (``nn.Conv2d(3, ValueChoice(...), 3)`` fails with a
message naming the mutable layer to use, :class:`nasforge.nn.Conv2d`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from nasforge.core.arch import Choice

__all__ = ["ValueExpr", "ValueChoice", "largest", "now", "leaves"]

Number = int | float

_LAYERS = "nasforge.nn.Conv2d, Linear, BatchNorm2d or Dropout (import nasforge.nn as nm; nm.Conv2d(...))"


class ValueExpr:
    """A value that follows one or more :class:`ValueChoice` (arithmetic on choices).

    ``current`` is its value for the choices' current picks; :meth:`candidates` its possible
    values; :meth:`leaves` the choices it depends on.
    """

    text = "ValueExpr"

    def __init__(self, function: Callable[..., Number], operands: Sequence[Any], text: str) -> None:
        self.function, self.operands, self.text = function, tuple(operands), text

    def leaves(self) -> list[ValueChoice]:
        found: dict[int, ValueChoice] = {}
        for operand in self.operands:
            if isinstance(operand, ValueExpr):
                found.update((id(leaf), leaf) for leaf in operand.leaves())
        return list(found.values())

    @property
    def current(self) -> Number:  # type: ignore[override]
        return self.function(*(now(o) for o in self.operands))

    def evaluate(self, picks: dict[int, Number]) -> Number:
        """The value when each leaf (by ``id``) is ``picks[id(leaf)]``."""
        return self.function(*(o.evaluate(picks) if isinstance(o, ValueExpr) else o for o in self.operands))

    def candidates(self) -> list[Number]:
        leaves = self.leaves()
        values = {
            self.evaluate(dict(zip(map(id, leaves), combo, strict=True)))
            for combo in itertools.product(*(leaf.choice.candidates for leaf in leaves))
        }
        return sorted(values)

    @property
    def largest(self) -> Number:
        return max(self.candidates())

    def __repr__(self) -> str:
        return self.text

    def __float__(self) -> float:
        return float(self.current)

    def __int__(self) -> int:
        return int(self.current)

    # -- arithmetic: derived values --------------------------------------------------------------

    def _derive(self, other: Any, op: Callable[..., Number], symbol: str, reflected: bool = False) -> ValueExpr:
        if not isinstance(other, (int, float, ValueExpr)) or isinstance(other, bool):
            return NotImplemented
        left, right = (other, self) if reflected else (self, other)
        return ValueExpr(op, (left, right), f"({left!r} {symbol} {right!r})")

    def __add__(self, other: Any) -> ValueExpr:
        return self._derive(other, operator.add, "+")

    def __radd__(self, other: Any) -> ValueExpr:
        return self._derive(other, operator.add, "+", True)

    def __sub__(self, other: Any) -> ValueExpr:
        return self._derive(other, operator.sub, "-")

    def __rsub__(self, other: Any) -> ValueExpr:
        return self._derive(other, operator.sub, "-", True)

    def __mul__(self, other: Any) -> ValueExpr:
        return self._derive(other, operator.mul, "*")

    def __rmul__(self, other: Any) -> ValueExpr:
        return self._derive(other, operator.mul, "*", True)

    def __floordiv__(self, other: Any) -> ValueExpr:
        return self._derive(other, operator.floordiv, "//")

    def __rfloordiv__(self, other: Any) -> ValueExpr:
        return self._derive(other, operator.floordiv, "//", True)

    def __truediv__(self, other: Any) -> ValueExpr:
        return self._derive(other, operator.truediv, "/")

    def __rtruediv__(self, other: Any) -> ValueExpr:
        return self._derive(other, operator.truediv, "/", True)

    def __neg__(self) -> ValueExpr:
        return ValueExpr(operator.neg, (self,), f"-{self!r}")

    # -- what a plain torch layer would try: a message naming the mutable layer -------------------

    def _not_a_number(self, *_: Any) -> Any:
        raise TypeError(
            f"{self!r} is a choice, not a number: plain torch.nn layers cannot take it. "
            f"Use the mutable layer, {_LAYERS}"
        )

    __mod__ = __rmod__ = __lt__ = __le__ = __gt__ = __ge__ = __index__ = _not_a_number
    __hash__ = object.__hash__


class ValueChoice(ValueExpr):
    """A value (kernel size, width, depth, dropout rate) picked among ``candidates``; ``current``
    is the pick (the largest until an arch is set).

    Pass the same object (or another with the same label and candidates) to several layers to
    tie them to one decision, e.g. a conv's output width and the batch norm after it; derive
    values with arithmetic (``width * 2``).
    """

    current: Number = 0  # an attribute here (the pick), a property of derived values

    def __init__(self, candidates: Sequence[Number], label: str) -> None:
        values = tuple(candidates)
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"ValueChoice {label!r}: candidates must be ints or floats, got {values}")
        self.choice = Choice(label, values, ordered=True)
        self.current: Number = max(values)  # type: ignore[misc]
        self.text = f"ValueChoice({list(values)}, label={label!r})"

    def leaves(self) -> list[ValueChoice]:
        return [self]

    def evaluate(self, picks: dict[int, Number]) -> Number:
        return picks[id(self)]

    def candidates(self) -> list[Number]:
        return sorted(self.choice.candidates)  # type: ignore[type-var]

    def set(self, value: Any) -> None:
        """Pick ``value`` (kept an int when the candidates are ints)."""
        self.current = int(value) if all(isinstance(v, int) for v in self.choice.candidates) else float(value)

    @property
    def label(self) -> str:
        return self.choice.name

    @property
    def largest(self) -> Number:
        return max(self.choice.candidates)  # type: ignore[type-var,return-value]


def largest(value: Any) -> Any:
    """The largest value of a choice or expression; anything else as is."""
    return value.largest if isinstance(value, ValueExpr) else value


def now(value: Any) -> Any:
    """The current value of a choice or expression; anything else as is."""
    return value.current if isinstance(value, ValueExpr) else value


def leaves(*values: object) -> list[ValueChoice]:
    """The choices ``values`` depend on, each once."""
    found: dict[int, ValueChoice] = {}
    for value in values:
        if isinstance(value, ValueExpr):
            found.update((id(leaf), leaf) for leaf in value.leaves())
    return list(found.values())
