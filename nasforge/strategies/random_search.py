"""Random search: the baseline every NAS paper is measured against (Li & Talwalkar, 2019)."""

from __future__ import annotations

from typing import Any

from nasforge.core.arch import Arch
from nasforge.core.registry import register
from nasforge.core.strategy import Strategy

__all__ = ["RandomSearch"]


@register("strategy", "random")
class RandomSearch(Strategy):
    """Samples archs uniformly from the space.

    Args:
        deduplicate: never ask the same arch twice; the search ends (``ask`` returns None) once
            every arch of the space has been asked.
    """

    def __init__(self, deduplicate: bool = True) -> None:
        self.deduplicate = deduplicate
        self._seen: set[Arch] = set()

    def ask(self) -> Arch | None:
        if not self.deduplicate:
            return self.space.sample(self.rng)
        arch = self.space.sample_unseen(self.rng, self._seen)
        if arch is None:
            return None
        self._seen.add(arch)
        return arch

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen": [a.to_dict() for a in self._seen]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._seen = {Arch(a) for a in state["seen"]}
