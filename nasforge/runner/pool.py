"""What the pooled executors (``local``: worker processes, ``ray``: Ray actors) share: a queue of
jobs, a slot per worker holding the trial it runs, the ``timeout_s`` clock, and the wait loop that
hands finished trials back, kills workers whose trial ran too long and retries or fails the trial
of a worker that died."""

from __future__ import annotations

import time
from abc import abstractmethod
from collections import deque
from typing import ClassVar

from nasforge.runner.executors import Executor, Job, Outcome

__all__ = ["PoolSlot", "PoolExecutor"]


class PoolSlot:
    """One worker and the trial it runs (``job``), with the time the trial started on it."""

    def __init__(self) -> None:
        self.job: Job | None = None
        self.started: float | None = None

    def clear(self) -> None:
        """The worker runs nothing."""
        self.job, self.started = None, None


class PoolExecutor(Executor):
    """Base of executors with a fixed pool of workers. Subclasses start and replace workers, send
    jobs (:meth:`_dispatch`) and collect what finished (:meth:`_collect`); the loop is here."""

    #: How the reason of a timed-out trial ends: what happened to its worker.
    killed: ClassVar[str] = "its worker was killed"

    _slots: list[PoolSlot]
    _queue: deque[Job]

    @abstractmethod
    def _replace(self, slot: PoolSlot) -> None:
        """Kill the slot's worker (if alive) and start a fresh one in its place."""

    @abstractmethod
    def _dispatch(self) -> None:
        """Send queued jobs to free workers."""

    @abstractmethod
    def _collect(self, limit: float | None, outcomes: list[Outcome]) -> None:
        """Wait up to ``limit`` seconds (None: until something happens) and add what finished
        to ``outcomes``; a worker that died goes through :meth:`_fault`."""

    def submit(self, job: Job) -> None:
        self._queue.append(job)
        self._dispatch()

    def cancel(self) -> None:
        self._queue.clear()
        for slot in list(self._slots):
            if slot.job is not None:
                slot.clear()
                self._replace(slot)

    def _fault(self, slot: PoolSlot, reason: str, outcomes: list[Outcome]) -> None:
        """The slot's trial did not finish: a fresh worker takes the slot, and the trial runs
        again (queued first) while retries are left, else it fails with ``reason``."""
        job = slot.job
        slot.clear()
        self._replace(slot)
        if job is None:
            return
        retry = self.fault(job, reason)
        if isinstance(retry, Job):
            self._queue.appendleft(retry)
        else:
            outcomes.append(retry)

    def _limit(self, end: float | None) -> float | None:
        """How long the next wait may last: until ``end`` or the first running trial's timeout."""
        now = time.monotonic()
        limit = None if end is None else max(0.0, end - now)
        if self.timeout_s is not None:
            for slot in self._slots:
                if slot.job is not None and slot.started is not None:
                    left = max(0.0, slot.started + self.timeout_s - now)
                    limit = left if limit is None else min(limit, left)
        return limit

    def _expire(self, outcomes: list[Outcome]) -> None:
        if self.timeout_s is None:
            return
        now = time.monotonic()
        for slot in list(self._slots):
            if slot.job is not None and slot.started is not None and now - slot.started > self.timeout_s:
                took = now - slot.started
                self._fault(slot, f"timed out: ran {took:.3g} s, past timeout_s={self.timeout_s:g}; {self.killed}", outcomes)

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            outcomes: list[Outcome] = []
            self._collect(self._limit(end), outcomes)
            self._expire(outcomes)
            self._dispatch()
            if outcomes or (end is not None and time.monotonic() >= end):
                return outcomes
            if not self._queue and all(s.job is None for s in self._slots):
                return outcomes
