"""Random search: the baseline every NAS paper is measured against (Li & Talwalkar, 2019)."""

from __future__ import annotations

from nasforge.core.arch import Arch
from nasforge.core.registry import register
from nasforge.core.strategy import Strategy

__all__ = ["RandomSearch"]


@register("strategy", "random")
class RandomSearch(Strategy):
    """Samples archs uniformly from the space.

    Args:
        deduplicate: never ask the same arch twice (the default of every strategy); the search
            ends (``ask`` returns None) once every arch of the space has been asked.
    """

    def __init__(self, deduplicate: bool = True) -> None:
        self.deduplicate = deduplicate

    def ask(self) -> Arch | None:
        return self.sample_new()
