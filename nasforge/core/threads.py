"""Torch's CPU thread count, set for the length of a block and restored after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["pinned_threads"]


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Run the body with torch's CPU thread count set to ``threads`` (None: leave it)."""
    import torch

    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)
