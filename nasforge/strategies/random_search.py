"""Random search: the baseline every NAS paper is measured against (Li & Talwalkar, 2019)."""

from __future__ import annotations

from typing import ClassVar

from nasforge.core.arch import Arch
from nasforge.core.registry import register
from nasforge.core.strategy import PendingPolicy, Strategy

__all__ = ["RandomSearch"]


@register("strategy", "random")
class RandomSearch(Strategy):
    """Samples archs uniformly from the space.

    Args:
        deduplicate: never ask the same arch twice (the default of every strategy); the search
            ends (``ask`` returns None) once every arch of the space has been asked.
    """

    #: Proposals never depend on results: parallel workers ask exactly what one would.
    pending_policy: ClassVar[PendingPolicy] = "independent"

    def __init__(self, deduplicate: bool = True) -> None:
        self.deduplicate = deduplicate

    def ask(self) -> Arch | None:
        return self.sample_new()
