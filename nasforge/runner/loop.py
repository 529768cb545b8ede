"""The one loop: ask -> estimate -> score -> tell, with budgets, a store and checkpoints.

Every method nasforge supports is this loop with different parts plugged in; the runner never
branches on the kind of strategy or estimator.

Resuming is exact: the checkpoint holds the strategy's and estimator's state after some trial
``k``; every trial after ``k`` is in the store, and is *replayed* (the strategy is asked again,
must propose the same arch, and is told the stored trial) instead of re-evaluated. With the same
seed a resumed search therefore ends with exactly the trials of one never stopped.

The strategy reads what was asked and told from ``strategy.history``, the runner's
:class:`~nasforge.core.history.TrialLog`: its in-memory mirror of the store (trials up to the one
being replayed on resume, plus the arch in flight), so no strategy keeps or checkpoints a copy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt, model_validator

from nasforge.core.arch import Arch
from nasforge.core.capabilities import check_parallel, component_name
from nasforge.core.differentiable import ArchParameters
from nasforge.core.errors import CheckpointError, ConfigError
from nasforge.core.estimator import Context, Estimator, check_reported_metrics
from nasforge.core.history import TrialLog
from nasforge.core.objective import Objective
from nasforge.core.seeding import derive_seed
from nasforge.core.space import SearchSpace
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Result, Trial, TrialStatus
from nasforge.objectives.pareto import non_dominated
from nasforge.runner.checkpoint import load_checkpoint, save_checkpoint
from nasforge.runner.executors import Executor, Job, Outcome, SequentialExecutor, Workload
from nasforge.runner.rundir import RunLock, clean_leftovers, fingerprint_mismatch
from nasforge.runner.store import TrialStore

__all__ = ["Budget", "SearchResult", "Runner", "run_search", "check_resumable", "CHECKPOINT_FILE", "STORE_FILE"]

log = logging.getLogger("nasforge")

CHECKPOINT_FILE = "checkpoint.pt"
STORE_FILE = "trials.sqlite"
_CHECKPOINT_VERSION = 1


class Budget(BaseModel):
    """When a search stops: after ``trials`` trials or ``seconds`` of wall time, whichever first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: PositiveInt | None = None
    seconds: PositiveFloat | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Budget:
        if self.trials is None and self.seconds is None:
            raise ValueError("a budget needs 'trials' or 'seconds' (or both)")
        return self


@dataclass
class SearchResult:
    """The trials of a finished (or interrupted) search and what it found."""

    trials: list[Trial]
    objective: Objective
    stopped_because: str = ""
    #: The strategy's :attr:`~nasforge.core.strategy.Strategy.winner`: ``last`` puts the last
    #: feasible, completed trial first (a differentiable search's final arch).
    winner: Literal["best", "last"] = "best"

    def best(self, k: int = 1) -> list[Trial]:
        """The ``k`` best feasible, completed trials by the first objective value; with
        ``winner == "last"`` the last of them comes first, then the rest by value.

        Ties keep the earlier trial first; for several objectives, see :meth:`pareto_front`.
        """
        ok = [t for t in self.trials if t.ok]
        ranked = sorted(ok, key=lambda t: (-t.values[0], t.number))
        if self.winner == "last" and ok:
            last = max(ok, key=lambda t: t.number)
            ranked = [last, *(t for t in ranked if t is not last)]
        return ranked[:k]

    def pareto_front(self) -> list[Trial]:
        """Feasible, completed trials no other such trial dominates, best first objective first."""
        ok = [t for t in self.trials if t.ok]
        front = [ok[i] for i in non_dominated([t.values for t in ok])]
        return sorted(front, key=lambda t: (-t.values[0], t.number))


class Runner:
    """Joins a space, a strategy, an estimator and an objective into one search.

    Args:
        space, strategy, estimator, objective: the four parts.
        budget: when to stop.
        seed: the run seed; the strategy's seed and every trial's seed derive from it.
        run_dir: folder for the store, checkpoints and logs; None keeps everything in memory.
        data: task data handed to the estimator (``DataSplits``), if it needs any.
        device: torch device for estimators that train.
        checkpoint_seconds: least wall time between two checkpoints (one is always written at
            the end); trials in between are replayed from the store on resume.
        on_trial: called after every trial (progress bars, live logs).
        fingerprint: a hash per config section (:func:`~nasforge.runner.rundir.fingerprint`),
            recorded in the store and every checkpoint; a resume whose sections differ is refused.
        executor: where trials run (default :class:`~nasforge.runner.executors.SequentialExecutor`:
            in this process, one at a time); its ``workers`` is the number of trials in flight.
        data_spec: the config's data section as ``(type, options, seed)``, from which worker
            processes load the data themselves (else ``data`` is sent to each).

    With a ``run_dir``, :meth:`run` holds the directory's :class:`~nasforge.runner.rundir.RunLock`.
    """

    def __init__(
        self,
        space: SearchSpace,
        strategy: Strategy,
        estimator: Estimator,
        objective: Objective,
        *,
        budget: Budget,
        seed: int = 0,
        run_dir: str | Path | None = None,
        data: Any = None,
        device: str = "cpu",
        checkpoint_seconds: float = 30.0,
        on_trial: Callable[[Trial, SearchResult], None] | None = None,
        fingerprint: dict[str, str] | None = None,
        executor: Executor | None = None,
        data_spec: tuple[str, dict[str, Any], int] | None = None,
    ) -> None:
        self.space = space
        self.strategy = strategy
        self.estimator = estimator
        self.objective = objective
        self.budget = budget
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_seconds = checkpoint_seconds
        self.fingerprint = dict(fingerprint) if fingerprint else None
        self.on_trial = on_trial or (lambda trial, result: None)
        check_reported_metrics(estimator, objective)  # before a run directory or store exists
        self.executor = executor if executor is not None else SequentialExecutor()
        self.window = max(1, int(self.executor.workers))
        check_parallel(strategy, estimator, self.window, component_name("executor", type(self.executor)))
        self.data_spec = data_spec
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.store = TrialStore(self.run_dir / STORE_FILE)
        else:
            self.store = TrialStore(":memory:")
        self._pending: dict[int, Arch] = {}  # asked, not yet told: trial number -> arch
        self._exhausted = False  # the strategy's ask returned None
        arch_parameters = strategy if isinstance(strategy, ArchParameters) else None
        self.context = Context(
            space=space, data=data, seed=seed, device=device, run_dir=self.run_dir, log=log, arch_parameters=arch_parameters
        )
        self.result = SearchResult(trials=[], objective=objective, winner=type(strategy).winner)
        self.history = TrialLog(key=space.effective)  # mirrors self.result.trials, plus the arch in flight
        self._elapsed_before = 0.0

    # -- checkpoints -------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path | None:
        """Where checkpoints go (None for in-memory runs)."""
        return None if self.run_dir is None else self.run_dir / CHECKPOINT_FILE

    def _checkpoint(self, elapsed: float) -> None:
        if self.checkpoint_path is None:
            return
        save_checkpoint(
            self.checkpoint_path,
            {
                "version": _CHECKPOINT_VERSION,
                "seed": self.seed,
                "config": self.fingerprint,
                "n_trials": len(self.result.trials),
                "elapsed": elapsed,
                "strategy": self.strategy.state_dict(),
                "estimator": self.estimator.state_dict(),
                "window": self.window,
                "pending": [self._pending[n].to_dict() for n in sorted(self._pending)],
                "exhausted": self._exhausted,
            },
        )

    def _check_same_run(self, where: str, seed: Any, recorded: dict[str, str] | None) -> None:
        _check_same_run(self.run_dir, where, seed, recorded, self.seed, self.fingerprint)

    def _restore(self) -> None:
        """Restore from the run directory: checkpoint first, then replay the later trials.

        The store holds the told trials, in trial-number order. The checkpoint adds the archs
        asked but not yet told when it was written (several workers ask ahead): they are
        recorded in the history again, and, with the archs the replay asks, run again with their
        own seeds once the replay is done.
        """
        stored = self.store.trials()
        self._check_same_run(STORE_FILE, self.store.get_meta("seed"), self.store.get_meta("config"))
        start = 0
        path = self.checkpoint_path
        if path is not None and path.exists():
            state = load_checkpoint(path)
            self._check_same_run(CHECKPOINT_FILE, state.get("seed"), state.get("config"))
            if state["n_trials"] > len(stored):
                raise CheckpointError(
                    f"checkpoint {path} covers {state['n_trials']} trials but the store holds only {len(stored)}"
                )
            window = int(state.get("window", 1))
            if window != self.window and (state.get("pending") or window > 1 or self.window > 1):
                raise CheckpointError(
                    f"cannot resume {self.run_dir} with {self.window} worker(s): it ran with {window}, and the trials "
                    f"asked depend on it; resume it with --workers {window}"
                )
            self.strategy.load_state_dict(state["strategy"])
            self.estimator.load_state_dict(state["estimator"])
            start = int(state["n_trials"])
            self._elapsed_before = float(state.get("elapsed", 0.0))
            self.result.trials.extend(stored[:start])
            for trial in stored[:start]:
                self.history.record_ask(trial.arch)
                self.history.record_tell(trial)
            for number, arch in enumerate(state.get("pending", []), start=start):
                self._pending[number] = Arch(arch)
                self.history.record_ask(self._pending[number])
            self._exhausted = bool(state.get("exhausted", False))
        elif self.window > 1 and stored and self.store.get_meta("window") not in (None, self.window):
            raise CheckpointError(
                f"cannot resume {self.run_dir} with {self.window} workers: it ran with {self.store.get_meta('window')}; "
                f"resume it with --workers {self.store.get_meta('window')}"
            )
        self._fill()
        for trial in stored[start:]:
            arch = self._pending.get(trial.number)
            if trial.number != len(self.result.trials) or arch != trial.arch:
                raise CheckpointError(
                    f"cannot replay trial {trial.number}: the strategy now proposes {arch} but the store holds "
                    f"{trial.arch}. The config or the code changed since the run started; start a new run."
                )
            self.estimator.update(self._trial_context(trial.number))
            self._tell(trial)
            self._fill()
        if stored:
            self._elapsed_before = max(self._elapsed_before, float(stored[-1].extras.get("elapsed", 0.0)))
            log.info("resumed: %d trials restored (%d from the checkpoint, %d replayed)", len(stored), start, len(stored) - start)

    # -- the loop ------------------------------------------------------------------------------

    def _trial_context(self, number: int) -> Context:
        return replace(self.context, seed=derive_seed(self.seed, number))

    def _score(self, job: Job, outcome: Outcome) -> Trial:
        """The trial of ``job`` from what its executor returned: scored, or failed with the reason."""
        trial = Trial(number=job.number, arch=job.arch, seed=job.seed)
        if outcome.result is None:
            trial.status = TrialStatus.FAILED
            trial.error = outcome.error
            if outcome.attempts > 1:
                trial.extras["attempts"] = outcome.attempts
            return trial
        result: Result = outcome.result
        number = job.number
        metrics = {k: float(v) for k, v in result.metrics.items()}
        trial.cost = {k: float(v) for k, v in result.cost.items()}
        trial.extras = dict(result.extras)
        if outcome.attempts > 1:
            trial.extras["attempts"] = outcome.attempts
        try:
            values = tuple(float(v) for v in self.objective.score(metrics))
            feasible = self.objective.feasible(metrics)
        except KeyError as exc:
            raise ConfigError(f"the objective needs a metric the estimator does not report: {exc.args[0]}") from None
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad or not all(math.isfinite(v) for v in values):
            # a NaN or inf would rank arbitrarily (NaN compares false both ways): fail this trial only
            shown = ", ".join(f"{k} = {v}" for k, v in bad.items()) or f"objective values {values}"
            trial.status = TrialStatus.FAILED
            trial.error = f"the estimator reported a non-finite metric: {shown}"
            log.warning("trial %d failed: %s", number, trial.error)
            return trial
        trial.metrics, trial.values, trial.feasible = metrics, values, feasible
        return trial

    # -- the window: asks ahead of tells, tells in trial-number order ---------------------------

    def _ask_limit(self) -> float:
        """Trials numbered below this may be asked: the trial budget, plus the asks an
        uninterrupted run with a larger budget would make before telling its last trial
        (so raising ``budget.trials`` on resume continues the same schedule)."""
        trials = self.budget.trials
        return math.inf if trials is None else trials + self.window - 1

    def _fill(self) -> None:
        """Ask while fewer than ``window`` archs are in flight: trial ``k + window`` is asked right
        after trial ``k`` is told, whatever the order trials finish in (so runs are reproducible)."""
        while not self._exhausted and len(self._pending) < self.window:
            number = len(self.result.trials) + len(self._pending)
            if number >= self._ask_limit():
                return
            arch = self.strategy.ask()
            if arch is None:
                self._exhausted = True
                return
            self.history.record_ask(arch)
            self.space.validate(arch)
            self._pending[number] = arch

    def _tell(self, trial: Trial) -> None:
        del self._pending[trial.number]
        self.history.record_tell(trial)
        self.strategy.tell(trial)
        self.result.trials.append(trial)

    def _loop(self, started: float) -> str:
        """Keep ``window`` trials in flight; tell them in trial-number order; stop on the budget."""
        last_checkpoint = started
        submitted: set[int] = set()
        finished: dict[int, Trial] = {}  # done, waiting for the trials before them to be told
        trial_budget = math.inf if self.budget.trials is None else self.budget.trials
        while True:
            reason = self._stop_reason(started)
            if reason is not None:
                break
            self._fill()
            for number in sorted(self._pending):
                if number not in submitted and number < trial_budget:
                    self.estimator.update(self._trial_context(number))
                    self.executor.submit(Job(number, self._pending[number], derive_seed(self.seed, number)))
                    submitted.add(number)
            head = len(self.result.trials)
            if head not in self._pending:
                reason = "the strategy has nothing left to ask" if self._exhausted else "trial budget reached"
                break
            while head not in finished:
                left = None
                if self.budget.seconds is not None:
                    left = self.budget.seconds - (self._elapsed_before + time.monotonic() - started)
                if left is not None and left <= 0 and self.window > 1:
                    break
                for outcome in self.executor.wait(left if self.window > 1 else None):
                    number = outcome.number
                    finished[number] = self._score(Job(number, self._pending[number], derive_seed(self.seed, number)), outcome)
            if head not in finished:  # the time budget ran out inside a trial: stop what runs
                self.executor.cancel()
                continue
            trial = finished.pop(head)
            elapsed = self._elapsed_before + time.monotonic() - started
            trial.extras["elapsed"] = elapsed
            self.store.add(trial)
            self._tell(trial)
            self.on_trial(trial, self.result)
            if time.monotonic() - last_checkpoint >= self.checkpoint_seconds:
                self._checkpoint(elapsed)
                last_checkpoint = time.monotonic()
        self.executor.cancel()
        return reason

    def _stop_reason(self, started: float) -> str | None:
        if self.budget.trials is not None and len(self.result.trials) >= self.budget.trials:
            return f"trial budget of {self.budget.trials} reached"
        if self.budget.seconds is not None and self._elapsed_before + time.monotonic() - started >= self.budget.seconds:
            return f"time budget of {self.budget.seconds:g} s reached"
        return None

    def run(self, *, resume: bool = False) -> SearchResult:
        """Run the search until the budget is spent or the strategy has nothing left to ask.

        With ``resume=True`` the run directory's store and checkpoint are restored first (and the
        temporary files a killed run left are removed). The run directory's lock is held throughout.
        """
        if self.run_dir is None:
            return self._run(resume)
        with RunLock(self.run_dir):
            if resume:
                clean_leftovers(self.run_dir)
            return self._run(resume)

    def _run(self, resume: bool) -> SearchResult:
        self.history = TrialLog(key=self.space.effective)
        self.strategy.history = self.history
        self.strategy.setup(self.space, self.objective, seed=derive_seed(self.seed, "strategy"))
        if resume:
            self._restore()
        elif len(self.store):
            raise CheckpointError(
                f"run directory {self.run_dir} already holds {len(self.store)} trials; "
                "resume it (nasforge search --resume DIR) or choose another run_dir"
            )
        self.store.set_meta("seed", self.seed)
        if self.fingerprint:
            self.store.set_meta("config", self.fingerprint)
        size = self.space.size()
        if self.budget.trials is not None and self.budget.trials > size:
            log.warning(
                "the budget of %d trials exceeds the %d archs of the space; the search ends once the strategy "
                "has nothing left to ask (strategies that repeat archs may use the whole budget)",
                self.budget.trials,
                size,
            )
        started = time.monotonic()
        self.store.set_meta("window", self.window)
        self.executor.start(
            Workload(self.space, self.estimator, self.context, self.data_spec if self.window > 1 else None)
        )
        try:
            reason = self._loop(started)
        finally:
            self.executor.close()
        self._checkpoint(self._elapsed_before + time.monotonic() - started)
        self.result.stopped_because = reason
        self.store.set_meta(
            "stopped", {"reason": reason, "trials": len(self.result.trials), "budget": self.budget.model_dump()}
        )
        log.info("search stopped: %s after %d trials", reason, len(self.result.trials))
        return self.result


def _check_same_run(
    run_dir: Path | None, where: str, seed: Any, recorded: dict[str, str] | None, own_seed: int, own: dict[str, str] | None
) -> None:
    """Refuse to resume when ``where`` (the store, the checkpoint) was written with another seed
    or config than this run's: its trials and this run's would mix."""
    if seed is not None and seed != own_seed:
        raise CheckpointError(
            f"cannot resume {run_dir}: {where} was written with seed {seed}, not {own_seed}; "
            "resume it with its own config (nasforge search --resume DIR), or start a new run"
        )
    changed = fingerprint_mismatch(recorded, own)
    if changed:
        raise CheckpointError(
            f"cannot resume {run_dir}: the {', '.join(changed)} section(s) of the config differ from those "
            f"{where} was written with; resume it with its own config, or start a new run"
        )


def check_resumable(run_dir: str | Path, seed: int, fingerprint: dict[str, str] | None) -> None:
    """What :meth:`Runner.run` checks before resuming, without changing anything: the seed and
    config hashes that ``run_dir``'s store and checkpoint recorded match ``seed`` and ``fingerprint``.

    Raises:
        CheckpointError: they differ (or the checkpoint is corrupt).
    """
    run_dir = Path(run_dir)
    if (run_dir / STORE_FILE).is_file():
        store = TrialStore(run_dir / STORE_FILE, readonly=True)
        try:
            _check_same_run(run_dir, STORE_FILE, store.get_meta("seed"), store.get_meta("config"), seed, fingerprint)
        finally:
            store.close()
    if (run_dir / CHECKPOINT_FILE).is_file():
        state = load_checkpoint(run_dir / CHECKPOINT_FILE)
        _check_same_run(run_dir, CHECKPOINT_FILE, state.get("seed"), state.get("config"), seed, fingerprint)


def run_search(
    space: SearchSpace,
    strategy: Strategy,
    estimator: Estimator,
    objective: Objective,
    *,
    budget: Budget | int,
    seed: int = 0,
    run_dir: str | Path | None = None,
    data: Any = None,
    resume: bool = False,
) -> SearchResult:
    """Run one search in-process (a plain-Python entry point; ``budget=100`` means 100 trials)."""
    if isinstance(budget, int):
        budget = Budget(trials=budget)
    runner = Runner(space, strategy, estimator, objective, budget=budget, seed=seed, run_dir=run_dir, data=data)
    try:
        return runner.run(resume=resume)
    finally:
        runner.store.close()
