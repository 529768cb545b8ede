"""The runner's checkpoint file, written and read with the atomic helpers of :mod:`nasforge.core.atomic`.

Only the advice on a corrupt checkpoint is the runner's own: the trial store keeps every
finished trial, so a search can resume without its checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nasforge.core import atomic
from nasforge.core.atomic import save_checkpoint

__all__ = ["save_checkpoint", "load_checkpoint"]

_RESUME_ADVICE = (
    "Move it aside to resume from the trial store alone (every finished trial is kept there "
    "and the search is replayed up to it), or start a new run."
)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load the runner's checkpoint; a corrupt file raises CheckpointError saying how to resume."""
    return atomic.load_checkpoint(path, advice=_RESUME_ADVICE)
