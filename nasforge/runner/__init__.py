"""The runner: the one search loop, its store and checkpoints."""

from __future__ import annotations

from nasforge.runner.loop import Budget, Runner, SearchResult, run_search
from nasforge.runner.store import TrialStore

__all__ = ["Budget", "Runner", "SearchResult", "TrialStore", "run_search"]
