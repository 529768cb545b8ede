"""The ``local`` executor: N worker processes on this machine.

Each worker is a ``multiprocessing`` process (``forkserver`` context by default, ``spawn`` where
asked) holding one duplex pipe to the driver. The estimator, the space and the context are
pickled once per worker when it starts (the data is loaded by the worker from the config's data
section, or sent once when the runner was given data objects); each trial then sends only
``(number, arch, seed)`` and gets back the result or the failure's traceback.

The pool is ours rather than ``concurrent.futures.ProcessPoolExecutor`` so that a fault is
pinned on its trial: the driver knows which worker runs which trial, so a worker that dies
(SIGKILL, the OOM killer) fails or retries exactly that trial and only that worker is replaced,
and a trial past ``timeout_s`` (or the search's time budget) is stopped by killing its worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import time
from collections import deque
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

from nasforge.core.errors import NasforgeError
from nasforge.core.registry import register
from nasforge.runner.executors import Job, Outcome, Workload, run_job
from nasforge.runner.pool import PoolExecutor, PoolSlot

__all__ = ["LocalExecutor"]

log = logging.getLogger("nasforge")


def _worker_main(conn: Connection, payload: bytes, threads: int, device: str | None) -> None:
    """A worker: load the workload once, then run trials until the driver closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    import torch

    torch.set_num_threads(threads)
    try:
        workload: Workload = pickle.loads(payload)
        context = workload.context_in_worker()
        if device is not None:
            context = replace(context, device=device)
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops the search
        conn.send(("fatal", f"a worker could not start: {type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        conn.send(("start", job.number))
        try:
            outcome = run_job(workload.estimator, context, job)
        except NasforgeError as exc:
            conn.send(("user", job.number, f"{type(exc).__name__}: {exc}", exc))
            continue
        conn.send(("done", job.number, outcome))


class _Slot(PoolSlot):
    """One worker process and the trial it runs (``started``: when the worker began it, not when
    it was sent)."""

    def __init__(self, process: Any, conn: Connection) -> None:
        super().__init__()
        self.process = process
        self.conn = conn


@register("executor", "local")
class LocalExecutor(PoolExecutor):
    """A pool of ``workers`` processes on this machine running trials in parallel.

    Torch threads are split between workers: each sets ``torch.set_num_threads(max(1, threads
    // workers))``, ``threads`` being the driver's count (the config's ``threads``) unless given.
    With ``device: cuda`` and several GPUs, worker ``i`` uses ``cuda:i % count``.

    Args:
        workers: processes, and so trials in flight at once.
        timeout_s: a trial running longer is stopped (its worker killed and replaced) and fails
            with the reason, or is retried; None: no limit.
        max_retries: runs of a trial whose worker died or timed out, with the same seed, before
            it is recorded as failed.
        start_method: ``forkserver`` (workers fork from a clean server process; fast) or
            ``spawn`` (a fresh interpreter each; what CUDA in workers needs on some systems).
        threads: torch threads to split between the workers; None: the driver's.
    """

    def __init__(
        self,
        workers: PositiveInt = 2,
        timeout_s: PositiveFloat | None = None,
        max_retries: NonNegativeInt = 0,
        start_method: Literal["forkserver", "spawn"] = "forkserver",
        threads: PositiveInt | None = None,
    ) -> None:
        super().__init__(timeout_s=timeout_s, max_retries=max_retries)
        self.workers = workers
        self.start_method = start_method
        self.threads = threads
        self._slots: list[_Slot] = []

    # -- workers ---------------------------------------------------------------------------------

    def start(self, workload: Workload) -> None:
        import torch

        self._payload = workload.to_bytes()
        self._device = workload.context.device
        self._per_worker = max(1, (self.threads or torch.get_num_threads()) // self.workers)
        self._context = multiprocessing.get_context(self.start_method)
        self._queue: deque[Job] = deque()
        self._slots = [self._spawn(i) for i in range(self.workers)]

    def _spawn(self, index: int) -> _Slot:
        device = None
        if self._device == "cuda":
            import torch

            device = f"cuda:{index % max(1, torch.cuda.device_count())}"
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main, args=(theirs, self._payload, self._per_worker, device), daemon=True, name=f"nasforge-worker-{index}"
        )
        process.start()
        theirs.close()
        return _Slot(process, ours)

    def _replace(self, slot: _Slot) -> None:
        """Kill ``slot``'s worker (if alive) and start a fresh one in its place."""
        _kill(slot.process)
        slot.conn.close()
        index = self._slots.index(slot)
        self._slots[index] = self._spawn(index)

    # -- trials ----------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        for slot in self._slots:
            if not self._queue:
                return
            if slot.job is None:
                slot.job, slot.started = self._queue.popleft(), None
                try:
                    slot.conn.send(slot.job)
                except (BrokenPipeError, OSError):
                    pass  # the worker died; its sentinel reports it and the job is retried or failed

    def _collect(self, limit: float | None, outcomes: list[Outcome]) -> None:
        ready = set(wait([s.conn for s in self._slots] + [s.process.sentinel for s in self._slots], limit))
        for slot in list(self._slots):
            if slot.conn in ready or slot.process.sentinel in ready:
                self._receive(slot, outcomes)

    def _receive(self, slot: _Slot, outcomes: list[Outcome]) -> None:
        while True:
            try:
                if not slot.conn.poll():
                    break
                message = slot.conn.recv()
            except (EOFError, OSError):
                break
            tag = message[0]
            if tag == "start":
                slot.started = time.monotonic()
            elif tag == "done":
                slot.clear()
                outcomes.append(message[2])
            elif tag == "user":
                raise message[3] if isinstance(message[3], NasforgeError) else NasforgeError(message[2])
            elif tag == "fatal":
                raise NasforgeError(message[1])
        if not slot.process.is_alive():
            slot.process.join()
            self._fault(slot, f"its worker process died ({_exit_reason(slot.process.exitcode)})", outcomes)

    def close(self) -> None:
        self._queue = deque()
        for slot in self._slots:
            try:
                slot.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 5.0
        for slot in self._slots:
            if slot.job is not None:
                _kill(slot.process)
            slot.process.join(max(0.0, deadline - time.monotonic()))
            _kill(slot.process)
            slot.conn.close()
        self._slots = []


def _kill(process: Any) -> None:
    """SIGKILL one worker we started (by its own PID) and reap it."""
    if process.is_alive():
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.join()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
