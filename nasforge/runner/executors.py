"""Executors: where the one loop's trials run (in the driver, in a pool of worker processes, ...).

The runner asks, scores, stores and tells; an executor only turns ``(number, arch, seed)`` into
the estimator's :class:`~nasforge.core.trial.Result` or a failure reason. Executors are a
registry kind (``executor: {type: local, workers: 2}`` in a config), so another engine (Ray) is
one more registered class with the same four methods.

Every executor takes ``timeout_s`` (a trial running longer fails with the reason) and
``max_retries`` (a trial whose worker died or that timed out runs again with the same seed, up
to that many times, before it fails). An exception inside ``estimate`` is the trial's own
failure and is never retried; a :class:`~nasforge.core.errors.NasforgeError` (a user error)
stops the search.
"""

from __future__ import annotations

import logging
import math
import pickle
import signal
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import NonNegativeInt, PositiveFloat

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.component import Component
from nasforge.core.errors import ConfigError, NasforgeError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.registry import register
from nasforge.core.trial import Result

__all__ = ["Job", "Outcome", "Workload", "Executor", "SequentialExecutor", "TrialTimeout", "make_executor", "with_workers"]

log = logging.getLogger("nasforge")


@dataclass(frozen=True)
class Job:
    """One trial to run: its number, arch and seed, and which attempt this is (0 first)."""

    number: int
    arch: Arch
    seed: int
    attempt: int = 0


@dataclass
class Outcome:
    """What came back for a trial: the estimator's result, or why it failed."""

    number: int
    result: Result | None = None
    error: str | None = None
    attempts: int = 1


@dataclass
class Workload:
    """What every worker needs, sent once per worker: the space, the estimator, the context the
    trials' contexts derive from (its ``data`` left out when ``data_spec`` is given), and the
    config's data section with its seed, so a worker loads the data itself instead of receiving it."""

    space: Any
    estimator: Estimator
    context: Context
    data_spec: tuple[str, Mapping[str, Any], int] | None = None

    def context_in_worker(self) -> Context:
        """The context a worker builds trials' contexts from, the data loaded where needed."""
        if self.data_spec is None:
            return self.context
        kind, options, seed = self.data_spec
        data = registry.create("dataset", kind, dict(options), where="executor worker: data").load(seed=seed)
        return replace(self.context, data=data)

    def to_bytes(self) -> bytes:
        """The workload pickled (without the driver's data when workers load their own)."""
        sent = self if self.data_spec is None else replace(self, context=replace(self.context, data=None))
        sent = replace(sent, context=replace(sent.context, arch_parameters=None, progress=None))
        try:
            return pickle.dumps(sent)
        except Exception as exc:  # an estimator holding a lock, an open file, a lambda
            raise ConfigError(
                f"cannot send the estimator and space to worker processes: {type(exc).__name__}: {exc}; "
                "run with 1 worker (executor: sequential)"
            ) from None


class TrialTimeout(Exception):
    """Raised inside a trial that ran past the executor's ``timeout_s``."""


class Executor(Component, ABC):
    """Base of every executor. The runner calls :meth:`start` once, then :meth:`submit` for each
    trial (never more than :attr:`workers` at once), :meth:`wait` for what finished, and
    :meth:`close` (also on errors); :meth:`cancel` stops every trial in flight (the time budget).

    Args:
        timeout_s: a trial running longer than this many seconds fails with the reason (or is
            retried); None: no limit.
        max_retries: how many times a trial whose worker died or that timed out runs again,
            with the same seed, before it is recorded as failed.
    """

    #: Trials in flight at once; the runner's window (see docs/design.md, "Executors").
    workers: int = 1

    def __init__(self, timeout_s: PositiveFloat | None = None, max_retries: NonNegativeInt = 0) -> None:
        self.timeout_s = timeout_s
        self.max_retries = max_retries

    @abstractmethod
    def start(self, workload: Workload) -> None:
        """Prepare to run trials of ``workload`` (start workers)."""

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Run ``job`` (now, or when a worker frees up)."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """Block until at least one submitted trial finished, and return every one that did;
        an empty list when ``timeout`` seconds passed first."""

    def cancel(self) -> None:
        """Stop every trial in flight; they come back from no later :meth:`wait`."""

    def close(self) -> None:
        """Release workers; the executor can be started again."""

    def fault(self, job: Job, reason: str) -> Job | Outcome:
        """The job again (attempt + 1) while retries are left, else the failed outcome."""
        if job.attempt < self.max_retries:
            log.warning("trial %d: %s; running it again with the same seed (retry %d of %d)",
                        job.number, reason, job.attempt + 1, self.max_retries)
            return replace(job, attempt=job.attempt + 1)
        tries = f" (after {job.attempt + 1} attempts)" if job.attempt else ""
        log.warning("trial %d failed: %s%s", job.number, reason, tries)
        return Outcome(job.number, error=f"{reason}{tries}", attempts=job.attempt + 1)


def run_job(estimator: Estimator, context: Context, job: Job) -> Outcome:
    """Run one trial in this process: the result, or the traceback of its exception (a
    :class:`NasforgeError` propagates: it would fail every trial)."""
    try:
        result = estimator.estimate(job.arch, replace(context, seed=job.seed))
    except NasforgeError:
        raise
    except TrialTimeout:
        raise
    except Exception as exc:
        log.warning("trial %d failed: %s: %s", job.number, type(exc).__name__, exc)
        return Outcome(job.number, error=traceback.format_exc(), attempts=job.attempt + 1)
    return Outcome(job.number, result=result, attempts=job.attempt + 1)


@register("executor", "sequential")
class SequentialExecutor(Executor):
    """Today's loop: each trial runs in the driver process, one at a time (the default).

    ``timeout_s`` interrupts a trial with ``SIGALRM`` (an exception raised in the driver's main
    thread, so it stops at the next Python bytecode: a long C call such as one big convolution
    finishes first). Off the main thread, or where there is no ``SIGALRM`` (Windows), a hard stop
    is impossible in-process: the trial runs to its end and fails if it took longer. A trial that
    must be killed outright needs worker processes (``local``).
    """

    workers = 1

    def start(self, workload: Workload) -> None:
        self._workload = workload
        self._queue: deque[Job] = deque()

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        while self._queue:
            job = self._queue.popleft()
            began = time.monotonic()
            try:
                with _alarm(self.timeout_s):
                    outcome = run_job(self._workload.estimator, self._workload.context, job)
            except TrialTimeout:
                outcome = None
            took = time.monotonic() - began
            if outcome is None or (self.timeout_s is not None and took > self.timeout_s):
                retry = self.fault(job, f"timed out: ran {took:.3g} s, past timeout_s={self.timeout_s:g}")
                if isinstance(retry, Job):
                    self._queue.appendleft(retry)
                    continue
                outcome = retry
            return [outcome]
        return []


class _alarm:
    """Raise :class:`TrialTimeout` in the main thread after ``seconds`` (a no-op when None, off
    the main thread, or without ``SIGALRM``)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.armed = (
            seconds is not None
            and math.isfinite(seconds)
            and hasattr(signal, "SIGALRM")
            and threading.current_thread() is threading.main_thread()
        )

    def _fire(self, signum: int, frame: Any) -> None:
        raise TrialTimeout()

    def __enter__(self) -> _alarm:
        if self.armed:
            self._previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, float(self.seconds))  # type: ignore[arg-type]
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
            signal.signal(signal.SIGALRM, self._previous)


def with_workers(spec: Any, workers: int) -> registry.ComponentSpec:
    """The executor section ``spec`` with ``workers`` trials at once (``--workers N``): 1 is
    ``sequential``, more is ``local`` unless the section names another pool (``ray``);
    ``timeout_s`` and ``max_retries`` are kept."""
    spec = registry.ComponentSpec.model_validate(spec if spec is not None else {"type": "sequential"})
    options = dict(spec.options)
    if workers <= 1:
        kept = {k: v for k, v in options.items() if k in ("timeout_s", "max_retries")}
        return registry.ComponentSpec.model_validate({"type": "sequential", **kept})
    kind = "local" if spec.type == "sequential" else spec.type
    return registry.ComponentSpec.model_validate({"type": kind, **options, "workers": workers})


def make_executor(spec: Any = None) -> Executor:
    """The executor of a config's ``executor`` section (None: ``sequential``)."""
    spec = registry.ComponentSpec.model_validate(spec if spec is not None else {"type": "sequential"})
    return registry.create("executor", spec.type, spec.options, where="executor")
