"""What a search has asked and been told, as the loop hands it to its strategy.

A strategy reads the search's history here (as Optuna's samplers read the study) instead of
keeping its own copy: the runner records every ask and every told trial in a :class:`TrialLog`
(its in-memory mirror of the trial store, rebuilt from the store on resume) and binds it to the
strategy as ``strategy.history``, a read-only :class:`History`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from nasforge.core.arch import Arch
from nasforge.core.trial import Trial

__all__ = ["History", "TrialLog"]


class History:
    """A read-only view of a search's trials: the told ones in order, and the archs asked but not
    yet told (trials in flight).

    ``arch in history`` is true for an arch asked or told in this search (the test every
    deduplicating strategy uses); ``len(history)`` counts told trials. Archs are compared by
    ``key``, the space's :meth:`~nasforge.core.space.SearchSpace.effective` form where the driver
    gives it, so an arch differing from a known one only in inactive choices is known too.
    """

    def __init__(self, key: Callable[[Arch], Arch] | None = None) -> None:
        self._key: Callable[[Arch], Arch] = key or (lambda arch: arch)
        self._trials: list[Trial] = []
        self._told: dict[Arch, Trial] = {}  # the latest told trial of each arch
        self._pending: dict[Arch, int] = {}  # asks not yet told, per arch
        self._n_asked = 0

    def trials(self) -> list[Trial]:
        """Every told trial, in the order told (a copy)."""
        return list(self._trials)

    def __len__(self) -> int:
        return len(self._trials)

    def __iter__(self) -> Iterator[Trial]:
        return iter(list(self._trials))

    def __contains__(self, arch: object) -> bool:
        if not isinstance(arch, Arch):
            return False
        key = self._key(arch)
        return key in self._told or key in self._pending

    def asked(self, arch: Arch) -> bool:
        """Whether ``arch`` was asked (or told) in this search: the same as ``arch in history``."""
        return arch in self

    def told(self, arch: Arch) -> Trial | None:
        """The latest told trial of ``arch`` (or of an arch with the same effective form), or None."""
        return self._told.get(self._key(arch))

    def pending(self) -> list[Arch]:
        """Archs asked but not yet told, oldest first (one entry per ask; effective forms)."""
        return [arch for arch, n in self._pending.items() for _ in range(n)]

    @property
    def n_told(self) -> int:
        """How many trials were told."""
        return len(self._trials)

    @property
    def n_asked(self) -> int:
        """How many archs were asked (told trials that were not asked, e.g. a warm start, excluded)."""
        return self._n_asked

    @property
    def n_archs(self) -> int:
        """How many distinct archs were asked or told."""
        return len(self._told) + sum(1 for arch in self._pending if arch not in self._told)

    @property
    def n_pending(self) -> int:
        """How many asked archs are not yet told."""
        return sum(self._pending.values())


class TrialLog(History):
    """The writable history a driver (the runner, :func:`nasforge.testing.drive`) keeps and hands
    its strategy as a :class:`History`. Only the driver records; strategies only read."""

    def __init__(self, trials: Iterable[Trial] = (), *, key: Callable[[Arch], Arch] | None = None) -> None:
        super().__init__(key)
        for trial in trials:
            self.record_ask(trial.arch)
            self.record_tell(trial)

    def record_ask(self, arch: Arch) -> None:
        """``arch`` was asked and is now in flight."""
        arch = self._key(arch)
        self._pending[arch] = self._pending.get(arch, 0) + 1
        self._n_asked += 1

    def record_tell(self, trial: Trial) -> None:
        """``trial`` finished (recorded before the strategy is told, so it sees its own trial)."""
        arch = self._key(trial.arch)
        count = self._pending.get(arch, 0)
        if count > 1:
            self._pending[arch] = count - 1
        elif count == 1:
            del self._pending[arch]
        self._trials.append(trial)
        self._told[arch] = trial
