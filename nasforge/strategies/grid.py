"""Grid search: every arch of a small space, once each."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from nasforge.core.arch import Arch
from nasforge.core.errors import SpaceExhaustedError
from nasforge.core.registry import register
from nasforge.core.strategy import PendingPolicy, Strategy

__all__ = ["GridSearch"]


@register("strategy", "grid")
class GridSearch(Strategy):
    """Asks every arch of the space exactly once, then None.

    Args:
        shuffle: visit the grid in a seeded random order instead of lexicographic order, so a
            search cut short by its budget still sees a spread of the space.
        max_size: refuse spaces larger than this (a grid over millions of archs is a mistake).
    """

    #: Proposals never depend on results: parallel workers ask exactly what one would.
    pending_policy: ClassVar[PendingPolicy] = "independent"

    def __init__(self, shuffle: bool = False, max_size: Annotated[int, Field(ge=1)] = 100_000) -> None:
        self.shuffle = shuffle
        self.max_size = max_size

    def setup(self, space: Any, objective: Any, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        size = space.size()
        if size > self.max_size:
            raise SpaceExhaustedError(
                f"grid search over {size:,} archs exceeds max_size={self.max_size:,}; "
                "use another strategy, a smaller space, or raise max_size"
            )
        self._order = list(space.enumerate())
        if self.shuffle:
            self._order = [self._order[i] for i in self.rng.permutation(len(self._order))]
        self._next = 0

    def ask(self) -> Arch | None:
        if self._next >= len(self._order):
            return None
        self._next += 1
        return self._order[self._next - 1]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "next": self._next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._next = int(state["next"])
