"""The ``ray`` executor: trials run in Ray actors, on this machine or on a Ray cluster.

Ray is an optional extra (``pip install nasforge[ray]``); this module imports it only when the
executor is constructed, so the registry can list ``ray`` without it, and choosing ``type: ray``
without Ray installed is a :class:`~nasforge.core.errors.ConfigError` before anything runs.

One actor per worker holds the workload: the space, the estimator and the context are pickled
once, put in Ray's object store once (``ray.put``) and handed to every actor, which loads the data
itself from the config's data section as a ``local`` worker does. Each trial then sends only the
:class:`~nasforge.runner.executors.Job` (number, arch, seed) to an idle actor. Each actor asks
for the per-trial resources (``num_cpus``, ``num_gpus``), so Ray places it where they are free and
sets ``CUDA_VISIBLE_DEVICES`` for it.

Faults are pinned on their trial as in ``local``: the driver knows which actor runs which trial,
so an actor that dies (its process SIGKILLed or OOM-killed: ``ActorDiedError``, or its node lost)
fails or retries exactly that trial (``max_retries``, same seed) and only that actor is replaced;
a trial past ``timeout_s``, and every trial in flight when the time budget runs out, is stopped by
killing its actor (``ray.cancel`` cannot force-stop an actor task).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from dataclasses import replace
from typing import Any, ClassVar

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from nasforge.core.errors import ConfigError, NasforgeError
from nasforge.core.registry import register
from nasforge.runner.executors import Job, Outcome, Workload, run_job
from nasforge.runner.pool import PoolExecutor, PoolSlot

__all__ = ["RayExecutor", "INSTALL_HINT"]

log = logging.getLogger("nasforge")

INSTALL_HINT = "pip install nasforge[ray]"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"executor type 'ray' needs Ray, which is not installed ({exc}); install the extra: {INSTALL_HINT}"
        ) from None
    return ray


class _Worker:
    """The body of one Ray actor: the workload, loaded once; then one trial per :meth:`run`."""

    def __init__(self, payload: Any, threads: int) -> None:
        import pickle

        import torch

        torch.set_num_threads(threads)
        self.error: str | None = None
        try:
            workload: Workload = pickle.loads(payload)
            self.estimator = workload.estimator
            context = workload.context_in_worker()
            if context.device == "cuda":
                context = replace(context, device="cuda:0")  # Ray sets CUDA_VISIBLE_DEVICES per actor
            self.context = context
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops the search
            self.error = f"a Ray worker could not start: {type(exc).__name__}: {exc}"

    def ready(self) -> str | None:
        return self.error

    def run(self, job: Job) -> tuple[str, Any]:
        try:
            return "done", run_job(self.estimator, self.context, job)
        except NasforgeError as exc:
            return "user", exc


class _Slot(PoolSlot):
    """One actor, whether it finished starting, and the trial it runs (``ref``: its result)."""

    def __init__(self, actor: Any, ready: Any) -> None:
        super().__init__()
        self.actor = actor
        self.ready_ref: Any = ready  # None once the actor reported ready
        self.ref: Any = None

    def clear(self) -> None:
        super().clear()
        self.ref = None


@register("executor", "ray")
class RayExecutor(PoolExecutor):
    """Trials in ``workers`` Ray actors, each holding the workload (needs ``pip install nasforge[ray]``).

    Without ``address`` (and when Ray is not already initialised in this process) a local Ray
    starts with ``num_cpus = workers * num_cpus`` (rounded up), no dashboard, workers' logs kept
    out of the driver's output, bound to 127.0.0.1; it is shut down by :meth:`close`. With
    ``address: auto`` (or ``ray://...``, ``HOST:PORT``) the executor joins that cluster and
    leaves it running.

    Args:
        workers: actors, and so trials in flight at once.
        address: the Ray cluster to join (``auto``: the one ``ray start`` runs on this node);
            None: start a local one (or use the one this process already initialised).
        num_cpus: CPUs each trial's actor asks Ray for (fractions allowed).
        num_gpus: GPUs each trial's actor asks Ray for (0: none; fractions share a device).
        timeout_s: a trial running longer is stopped (its actor killed and replaced) and fails
            with the reason, or is retried; None: no limit.
        max_retries: runs of a trial whose actor died or timed out, with the same seed, before it
            is recorded as failed.
        threads: torch threads in each actor; None: ``max(1, floor(num_cpus))``.
    """

    killed: ClassVar[str] = "its Ray actor was killed"

    def __init__(
        self,
        workers: PositiveInt = 2,
        address: str | None = None,
        num_cpus: PositiveFloat = 1.0,
        num_gpus: NonNegativeFloat = 0.0,
        timeout_s: PositiveFloat | None = None,
        max_retries: NonNegativeInt = 0,
        threads: PositiveInt | None = None,
    ) -> None:
        super().__init__(timeout_s=timeout_s, max_retries=max_retries)
        _import_ray()  # a missing extra is a ConfigError now, before any data loads
        self.workers = workers
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.threads = threads
        self._slots: list[_Slot] = []
        self._owns_ray = False

    # -- actors ----------------------------------------------------------------------------------

    def start(self, workload: Workload) -> None:
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address is not None:
                ray.init(address=self.address, log_to_driver=False, include_dashboard=False)
            else:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network use
                ray.init(
                    num_cpus=max(self.workers, math.ceil(self.workers * self.num_cpus)),
                    include_dashboard=False,
                    log_to_driver=False,
                    _node_ip_address="127.0.0.1",
                    configure_logging=False,
                )
                self._owns_ray = True
        self._ray = ray
        self._payload = ray.put(workload.to_bytes())  # sent once, shared by every actor
        self._actor_class = ray.remote(_Worker).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=0, max_task_retries=0
        )
        self._queue: deque[Job] = deque()
        self._slots = [self._spawn() for _ in range(self.workers)]
        for slot in self._slots:  # fail now (not in the first trial) when the workload cannot load
            self._check_ready(slot, self._ray.get(slot.ready_ref))

    def _spawn(self) -> _Slot:
        threads = self.threads or max(1, int(self.num_cpus))
        actor = self._actor_class.remote(self._payload, threads)
        return _Slot(actor, actor.ready.remote())

    def _check_ready(self, slot: _Slot, error: str | None) -> None:
        if error is not None:
            raise NasforgeError(error)
        slot.ready_ref = None

    def _replace(self, slot: _Slot) -> None:
        """Kill ``slot``'s actor (if alive) and start a fresh one in its place."""
        self._kill(slot.actor)
        index = self._slots.index(slot)
        self._slots[index] = self._spawn()

    def _kill(self, actor: Any) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass

    # -- trials ----------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        for slot in self._slots:
            if not self._queue:
                return
            if slot.job is None and slot.ready_ref is None:
                slot.job = self._queue.popleft()
                slot.ref = slot.actor.run.remote(slot.job)
                slot.started = time.monotonic()

    def _collect(self, limit: float | None, outcomes: list[Outcome]) -> None:
        ray = self._ray
        refs = {}
        for slot in self._slots:
            if slot.ref is not None:
                refs[slot.ref] = slot
            elif slot.ready_ref is not None:
                refs[slot.ready_ref] = slot
        if not refs:
            return
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=limit)
        # everything else already finished too, without waiting again
        ready = set(ready) | set(ray.wait(list(refs), num_returns=len(refs), timeout=0)[0])
        for ref in ready:
            self._receive(refs[ref], ref, outcomes)

    def _receive(self, slot: _Slot, ref: Any, outcomes: list[Outcome]) -> None:
        ray = self._ray
        try:
            value = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            self._fault(slot, f"its Ray worker died ({_reason(exc)})", outcomes)
            return
        if slot.ready_ref is not None and ref == slot.ready_ref:
            self._check_ready(slot, value)
            return
        tag, payload = value
        slot.clear()
        if tag == "user":
            raise payload if isinstance(payload, NasforgeError) else NasforgeError(str(payload))
        outcomes.append(payload)

    def close(self) -> None:
        self._queue = deque()
        for slot in self._slots:
            self._kill(slot.actor)
        self._slots = []
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False


def _reason(exc: Exception) -> str:
    """The first line of Ray's explanation, prefixed with its exception's name."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}"
