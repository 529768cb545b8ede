"""The loop: budgets, failures, the store, plugins, and exact resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.estimator import Context, Estimator
from nasforge.core.trial import Result, TrialStatus
from nasforge.objectives.basic import SingleMetric
from nasforge.runner import Budget, Runner, TrialStore
from nasforge.strategies.evolution import RegularizedEvolution
from nasforge.testing import SyntheticEstimator, ToySpace


class FailsOnPool(Estimator):
    def estimate(self, arch: Arch, ctx: Context) -> Result:
        if arch["op"] == "pool":
            raise RuntimeError("pooling exploded")
        return SyntheticEstimator().estimate(arch, ctx)


def test_failed_trial_is_recorded_and_search_goes_on(tmp_path: Path) -> None:
    runner = Runner(ToySpace(), RegularizedEvolution(), FailsOnPool(), SingleMetric(), budget=Budget(trials=25), run_dir=tmp_path)
    result = runner.run()
    failed = [t for t in result.trials if t.status is TrialStatus.FAILED]
    assert len(result.trials) == 25 and failed
    assert all("pooling exploded" in (t.error or "") and "Traceback" in (t.error or "") for t in failed)
    stored = TrialStore(tmp_path / "trials.sqlite").trials()
    assert [t.status for t in stored] == [t.status for t in result.trials]
    assert result.best(1)[0].arch["op"] != "pool"


def test_time_budget_stops_the_search() -> None:
    class Slow(SyntheticEstimator):
        def estimate(self, arch: Arch, ctx: Context) -> Result:
            time.sleep(0.02)
            return super().estimate(arch, ctx)

    started = time.monotonic()
    result = Runner(ToySpace(), RegularizedEvolution(), Slow(), SingleMetric(), budget=Budget(seconds=0.3)).run()
    assert time.monotonic() - started < 2.0
    assert "time budget" in result.stopped_because and 3 <= len(result.trials) <= 20


def test_budget_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="trials"):
        Budget()


@pytest.mark.parametrize("checkpoint_seconds", [1e-9, 1e9])  # resume from checkpoints / by replay alone
def test_resume_in_process_continues_exactly(tmp_path: Path, checkpoint_seconds: float) -> None:
    def runner(budget: int, run_dir: Path | None) -> Runner:
        return Runner(
            ToySpace(), RegularizedEvolution(), SyntheticEstimator(noise=2.0), SingleMetric(),
            budget=Budget(trials=budget), seed=7, run_dir=run_dir, checkpoint_seconds=checkpoint_seconds,
        )

    reference = runner(40, None).run().trials
    runner(15, tmp_path).run()
    resumed = runner(40, tmp_path).run(resume=True).trials
    assert [t.to_dict() | {"extras": {}} for t in resumed] == [t.to_dict() | {"extras": {}} for t in reference]


def test_store_round_trips_infinities(tmp_path: Path) -> None:
    from nasforge.core.trial import Trial

    store = TrialStore(tmp_path / "s.sqlite")
    trial = Trial(number=0, arch=Arch({"a": 1}), seed=3, metrics={"x": float("inf")}, values=(float("-inf"),))
    store.add(trial)
    assert store.trials()[0].values == (float("-inf"),) and store.trials()[0].metrics["x"] == float("inf")



def test_atomic_files_get_the_mode_open_would_give(tmp_path: Path) -> None:
    """Not mkstemp's 0600: run files, tables and model folders stay readable as the umask allows."""
    from nasforge.core.atomic import atomic_write_bytes

    (tmp_path / "plain").write_bytes(b"x")
    atomic_write_bytes(tmp_path / "atomic", b"x")
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


# -- plugins -------------------------------------------------------------------------------------

PLUGIN = '''
import hashlib, time
from nasforge.core.registry import register
from nasforge.core.estimator import Estimator
from nasforge.core.trial import Result

@register("estimator", "hashed_{tag}")
class Hashed(Estimator):
    """Deterministic pseudo-metrics from the arch and seed, after a short sleep."""
    def __init__(self, sleep: float = 0.0) -> None:
        self.sleep = sleep
    def estimate(self, arch, ctx):
        time.sleep(self.sleep)
        digest = hashlib.sha256(f"{{arch}}{{ctx.seed}}".encode()).digest()
        return Result(metrics={{"val_acc": digest[0] / 2.55, "params": float(digest[1])}})
'''


def test_plugin_folder_is_discovered(tmp_path: Path) -> None:
    folder = Path(os.environ["NASFORGE_HOME"]) / "plugins"
    folder.mkdir(parents=True)
    (folder / "hashed.py").write_text(PLUGIN.format(tag="folder"))
    registry.load_plugins()
    assert "hashed_folder" in registry.names("estimator")


def test_entry_point_plugin_is_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nasforge_demo_plugin.py").write_text(PLUGIN.format(tag="entry"))
    dist = tmp_path / "nasforge_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nasforge-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[nasforge.plugins]\ndemo = nasforge_demo_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "demo" in registry.load_plugins()
    assert "hashed_entry" in registry.names("estimator")


def test_broken_plugin_does_not_break_the_others(caplog: pytest.LogCaptureFixture) -> None:
    folder = Path(os.environ["NASFORGE_HOME"]) / "plugins"
    folder.mkdir(parents=True)
    (folder / "broken.py").write_text("raise RuntimeError('half-written plugin')\n")
    (folder / "fine.py").write_text(PLUGIN.format(tag="fine"))
    registry.load_plugins()
    assert "hashed_fine" in registry.names("estimator")
    assert "half-written plugin" in caplog.text


# -- SIGKILL at any moment, then resume ----------------------------------------------------------


def _config(tmp_path: Path, estimator: dict, trials: int) -> Path:
    config = {
        "name": "killed",
        "seed": 3,
        "threads": 1,
        "data": {"type": "digits", "train_limit": 200, "test_limit": 50},
        "space": {"type": "nb201", "C": 4, "N": 1},
        "strategy": {"type": "evolution", "population_size": 4, "sample_size": 2},
        "estimator": estimator,
        "budget": {"trials": trials},
        "checkpoint_seconds": 0.2,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nasforge.cli", *args]


def _stored(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(run_dir / "trials.sqlite") as db:
        return db.execute('SELECT number, arch, seed, status, metrics, "values" FROM trials ORDER BY number').fetchall()


def _count(run_dir: Path) -> int:
    try:
        with sqlite3.connect(run_dir / "trials.sqlite", timeout=0.1) as db:
            return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    except sqlite3.Error:
        return 0


def _kill_after(command: list[str], run_dir: Path, min_trials: int, extra_delay: float, env: dict) -> None:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _count(run_dir) < min_trials and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(extra_delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _sigkill_and_resume(tmp_path: Path, estimator: dict, trials: int, kills: list[tuple[int, float]]) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    config = _config(tmp_path, estimator, trials)
    reference = tmp_path / "reference"
    subprocess.run(_cli("search", str(config), "--run-dir", str(reference), "--quiet"), env=env, check=True, timeout=300)
    killed = tmp_path / "killed"
    first = True
    for min_trials, delay in kills:
        command = _cli("search", str(config), "--run-dir", str(killed), "--quiet") if first else _cli("search", "--resume", str(killed), "--quiet")
        if not first and not (killed / "config.yaml").exists():
            command = _cli("search", str(config), "--run-dir", str(killed), "--quiet")
        _kill_after(command, killed, min_trials, delay, env)
        first = not (killed / "config.yaml").exists()
    assert _count(killed) < trials, "the search finished before it could be killed"
    done = subprocess.run(_cli("search", "--resume", str(killed), "--quiet"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _stored(killed) == _stored(reference)


def test_sigkill_then_resume_gives_the_same_trials(tmp_path: Path) -> None:
    """Killed three times at arbitrary moments (mid-trial, mid-checkpoint), the search still ends
    with exactly the trials of a run that was never stopped."""
    rng = np.random.default_rng(int(time.time()))
    folder = Path(os.environ["NASFORGE_HOME"]) / "plugins"
    folder.mkdir(parents=True)
    (folder / "hashed.py").write_text(PLUGIN.format(tag="kill"))
    kills = [(int(k), float(d)) for k, d in zip((3, 9, 16), rng.uniform(0.0, 0.15, 3))]
    _sigkill_and_resume(tmp_path, {"type": "hashed_kill", "sleep": 0.03}, 30, kills)


def test_sigkill_during_real_training_then_resume(tmp_path: Path) -> None:
    """The same with children trained from scratch: training is deterministic given the seed."""
    _sigkill_and_resume(tmp_path, {"type": "scratch", "epochs": 1, "batch_size": 50}, 7, [(3, 0.1)])


def test_resume_refuses_a_changed_strategy(tmp_path: Path) -> None:
    from nasforge.cli import main

    config = _config(tmp_path, {"type": "scratch", "epochs": 1}, 3)
    assert main(["search", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    saved = tmp_path / "run" / "config.yaml"
    data = yaml.safe_load(saved.read_text())
    data["budget"]["trials"] = 6
    data["strategy"] = {"type": "grid"}
    saved.write_text(yaml.safe_dump(data))
    (tmp_path / "run" / "checkpoint.pt").unlink()
    assert main(["search", "--resume", str(tmp_path / "run"), "--quiet"]) == 2


def test_budget_larger_than_the_space_says_so_and_ends(caplog: pytest.LogCaptureFixture) -> None:
    from nasforge.strategies.random_search import RandomSearch
    from nasforge.testing.conformance import TinySpace

    with caplog.at_level("WARNING", logger="nasforge"):
        result = Runner(TinySpace(), RandomSearch(), SyntheticEstimator(lambda a: {"val_acc": 1.0}), SingleMetric(), budget=Budget(trials=50)).run()
    assert "exceeds the 4 archs of the space" in caplog.text
    assert len(result.trials) == 4 and result.stopped_because == "the strategy has nothing left to ask"


def test_saved_configs_name_files_by_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasforge.runner.config import absolute_paths

    monkeypatch.chdir(tmp_path)
    options = {
        "type": "latency_bounded",
        "inner": {"type": "model", "factory": "nets/models.py:resnet", "options": {"width": 8}},
        "table": "cpu.json",
        "estimators": [{"cost_model": "/abs/cm.pkl"}, {"factory": "mypkg.models:resnet"}],
        "max_ms": 2.0,
    }
    assert absolute_paths(options) == {
        "type": "latency_bounded",
        "inner": {"type": "model", "factory": f"{tmp_path / 'nets' / 'models.py'}:resnet", "options": {"width": 8}},
        "table": str(tmp_path / "cpu.json"),
        "estimators": [{"cost_model": "/abs/cm.pkl"}, {"factory": "mypkg.models:resnet"}],  # module paths stay
        "max_ms": 2.0,
    }
