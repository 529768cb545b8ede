"""What a run directory holds, read without changing it: the data behind ``nasforge status``,
``nasforge report`` and the dashboard.

:func:`summarize` opens the store read-only (so read-only and running runs are readable) and
returns a :class:`RunSummary`: the run's state, its budget and how much of it was used, the best
trials, the last error, and every trial as a :class:`TrialRow` (flat, JSON-able). Nothing here
builds data or models; the space is built only to print archs in its own notation (and skipped
when it cannot be).

A run's state is one of:

- ``running``: a live process holds the run's lock (:mod:`nasforge.runner.rundir`);
- ``finished``: its search stopped on its own (budget spent, or nothing left to ask) with every
  trial of its store;
- ``killed``: its writer died without releasing the lock (``kill -9``, a crash): the lock file
  still names a PID no process holds the lock for;
- ``stopped``: none of these (interrupted with Ctrl-C, or ended by an error): resumable.
"""

from __future__ import annotations

import errno
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nasforge.core import registry
from nasforge.core.errors import CheckpointError
from nasforge.core.trial import Trial
from nasforge.runner.loop import STORE_FILE
from nasforge.runner.rundir import _HELD, LOCK_FILE
from nasforge.runner.store import TrialStore

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunSummary", "TrialRow", "summarize", "run_state", "error_line", "STATES"]

STATES = ("running", "finished", "stopped", "killed")


@dataclass
class TrialRow:
    """One trial, flat: what a table row shows. ``values`` are the objective's scores (higher is
    better) by objective name; ``best_so_far`` is the best first score up to this trial."""

    number: int
    status: str
    arch: str
    seed: int
    values: dict[str, float]
    metrics: dict[str, float]
    cost: dict[str, float]
    feasible: bool
    elapsed: float | None
    best_so_far: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "complete" and self.feasible and bool(self.values)

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


@dataclass
class RunSummary:
    """A run directory at a glance (see the module's docstring for ``state``)."""

    run_dir: str
    name: str
    state: str
    pid: int | None
    stop_reason: str | None
    space: str
    strategy: str
    estimator: str
    objectives: list[str]
    budget: dict[str, Any]
    trials: int
    completed: int
    failed: int
    infeasible: int
    elapsed: float
    best: list[TrialRow]
    pareto: list[int]
    last_error: str | None
    last_error_trial: int | None
    final: str | None
    rows: list[TrialRow] = field(default_factory=list)
    arch_objects: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def budget_used(self) -> dict[str, Any]:
        """``{"trials": [done, budget], "seconds": [used, budget]}`` (a budget None when unset)."""
        return {
            "trials": [self.trials, self.budget.get("trials")],
            "seconds": [round(self.elapsed, 3), self.budget.get("seconds")],
        }

    def to_dict(self, *, rows: bool = False) -> dict[str, Any]:
        """A JSON-able dict (what ``nasforge status --json`` prints); ``rows`` adds every trial."""
        out = {k: v for k, v in asdict(self).items() if k not in ("rows", "arch_objects", "best")}
        out["multi_objective"] = self.multi_objective
        out["budget_used"] = self.budget_used()
        out["best"] = [r.to_dict() for r in self.best]
        if rows:
            out["rows"] = [r.to_dict() for r in self.rows]
        return _json_safe(out)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def error_line(error: str | None) -> str | None:
    """The line of a trial's error that says what happened: a traceback's last line (the
    exception), else the first line."""
    if not error:
        return None
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return None
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _lock_pid(run_dir: Path) -> int | None:
    try:
        text = (run_dir / LOCK_FILE).read_text(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _lock_held(run_dir: Path) -> bool:
    """Whether some process holds ``run_dir``'s lock: probed with a shared, non-blocking flock
    on a read-only descriptor, released at once."""
    if str(run_dir.resolve()) in _HELD:
        return True
    if fcntl is None:  # pragma: no cover - Windows
        return False
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def run_state(run_dir: Path, stopped: dict[str, Any] | None, n_trials: int) -> tuple[str, int | None]:
    """The run's state (one of :data:`STATES`) and the PID its lock names.

    A writer that ended cleanly leaves the lock file empty; only then is the lock not probed, so
    reading never gets in the way of a writer starting.
    """
    pid = _lock_pid(run_dir)
    if pid is not None:
        return ("running" if _lock_held(run_dir) else "killed"), pid
    if stopped and stopped.get("trials") == n_trials:
        return "finished", None
    return "stopped", None


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        loaded = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        loaded = None
    return loaded if isinstance(loaded, dict) else {}


def _section(config: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    spec = config.get(name)
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict):
        return str(spec.get("type", "?")), {k: v for k, v in spec.items() if k != "type"}
    return "?", {}


def _objective_names(config: dict[str, Any], width: int) -> list[str]:
    kind, options = _section(config, "objective")
    if kind == "?" and "objective" not in config:
        kind = "single"
    try:
        names = list(registry.create("objective", kind, options, where="objective").names)
    except Exception:  # noqa: BLE001 - a name per value is enough to show the run
        names = []
    if len(names) != width:
        names = [f"value{i}" for i in range(width)] if width != 1 else ["value"]
    return names


def _formatter(config: dict[str, Any]) -> Any:
    """The space's ``format`` (its own notation), or ``str`` when the space cannot be built here."""
    kind, options = _section(config, "space")
    try:
        space = registry.create("space", kind, options, where="space")
        space.format  # noqa: B018
    except Exception:  # noqa: BLE001 - a space that needs its data's context: print the JSON form
        return str

    def format_arch(arch: Any) -> str:
        try:
            return str(space.format(arch))
        except Exception:  # noqa: BLE001
            return str(arch)

    return format_arch


def _winner(config: dict[str, Any]) -> str:
    kind, _ = _section(config, "strategy")
    try:
        return str(getattr(registry.get("strategy", kind).target, "winner", "best"))
    except Exception:  # noqa: BLE001
        return "best"


def summarize(run_dir: str | Path, *, top: int = 5, rows: bool = True) -> RunSummary:
    """Read the run in ``run_dir`` (never writing it).

    Args:
        top: how many best trials (for several objectives, the first of the Pareto front).
        rows: keep every trial as a :class:`TrialRow` (``False`` for a quick status).

    Raises:
        CheckpointError: ``run_dir`` is not a run directory (no trial store).
    """
    from nasforge.runner.loop import SearchResult  # the ranking searches use (best / Pareto front)

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory; give a run directory (what nasforge search writes)")
    path = run_dir / STORE_FILE
    if not path.is_file():
        steps = sorted(p.name for p in run_dir.iterdir() if (p / STORE_FILE).is_file())
        hint = (
            f"; it looks like a pipeline: give one of its steps ({', '.join(str(run_dir / s) for s in steps)})"
            if steps
            else ""
        )
        raise CheckpointError(f"{run_dir} holds no trials ({STORE_FILE} is missing){hint}")
    store = TrialStore(path, readonly=True)
    try:
        trials = store.trials()
        stopped, final = store.get_meta("stopped"), store.get_meta("final")
    finally:
        store.close()
    config = _read_config(run_dir)
    width = max((len(t.values) for t in trials), default=1)
    names = _objective_names(config, width)
    fmt_arch = _formatter(config)
    state, pid = run_state(run_dir, stopped, len(trials))

    class _Objective:  # what SearchResult needs of an objective to rank stored values
        n_objectives = len(names)

    result = SearchResult(trials, _Objective(), winner=_winner(config))  # type: ignore[arg-type]
    table = _rows(trials, names, fmt_arch)
    by_number = {r.number: r for r in table}
    if len(names) > 1:
        front = [t.number for t in result.pareto_front()]
        best = [by_number[n] for n in front[:top]]
    else:
        front = []
        best = [by_number[t.number] for t in result.best(top)]
    errors = [t for t in trials if t.error]
    last = errors[-1] if errors else None
    budget = dict(config.get("budget") or (stopped or {}).get("budget") or {})
    return RunSummary(
        run_dir=str(run_dir),
        name=str(config.get("name", run_dir.name)),
        state=state,
        pid=pid,
        stop_reason=(stopped or {}).get("reason") if state == "finished" else None,
        space=_section(config, "space")[0],
        strategy=_section(config, "strategy")[0],
        estimator=_section(config, "estimator")[0],
        objectives=names,
        budget={"trials": budget.get("trials"), "seconds": budget.get("seconds")},
        trials=len(trials),
        completed=sum(1 for t in trials if t.status.value == "complete"),
        failed=sum(1 for t in trials if t.status.value != "complete"),
        infeasible=sum(1 for t in trials if t.status.value == "complete" and not t.feasible),
        elapsed=max((float(t.extras.get("elapsed", 0.0)) for t in trials), default=0.0),
        best=best,
        pareto=front,
        last_error=error_line(last.error) if last else None,
        last_error_trial=last.number if last else None,
        final=final.get("dir") if isinstance(final, dict) and final.get("trials") == len(trials) else None,
        rows=table if rows else [],
        arch_objects={t.number: t.arch for t in trials},
    )


def _rows(trials: list[Trial], names: list[str], fmt_arch: Any) -> list[TrialRow]:
    rows = []
    best: float | None = None
    for t in trials:
        ok = t.ok and bool(t.values)
        if ok and (best is None or t.values[0] > best):
            best = float(t.values[0])
        elapsed = t.extras.get("elapsed")
        rows.append(
            TrialRow(
                number=t.number,
                status=t.status.value,
                arch=fmt_arch(t.arch),
                seed=t.seed,
                values=dict(zip(names, (float(v) for v in t.values))) if t.values else {},
                metrics=dict(t.metrics),
                cost=dict(t.cost),
                feasible=t.feasible,
                elapsed=float(elapsed) if isinstance(elapsed, (int, float)) else None,
                best_so_far=best,
                error=t.error,
            )
        )
    return rows
