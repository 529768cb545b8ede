"""Executors (#14): parallel trials in worker processes, reproducible order, faults, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nasforge.core.errors import ConfigError
from nasforge.objectives.basic import SingleMetric
from nasforge.runner.executors import SequentialExecutor
from nasforge.runner.local_executor import LocalExecutor
from nasforge.runner.loop import STORE_FILE, Budget, Runner
from nasforge.runner.store import TrialStore
from nasforge.strategies.darts import DARTS
from nasforge.strategies.evolution import RegularizedEvolution
from nasforge.strategies.random_search import RandomSearch
from nasforge.testing import ToySpace
from nasforge.testing.faults import FaultyEstimator

ROOT = Path(__file__).resolve().parents[1]


def search(strategy, executor=None, estimator=None, trials=16, **kwargs):
    runner = Runner(
        ToySpace(), strategy, estimator or FaultyEstimator(jitter_s=0.03), SingleMetric(),
        budget=Budget(trials=trials), seed=5, executor=executor, **kwargs,
    )
    return runner.run()


def summary(result):
    return [(t.number, str(t.arch), t.seed, t.status.value, t.values) for t in result.trials]


def test_local_random_matches_sequential_and_reruns() -> None:
    sequential = summary(search(RandomSearch()))
    first = summary(search(RandomSearch(), LocalExecutor(workers=2)))
    assert first == sequential
    assert summary(search(RandomSearch(), LocalExecutor(workers=2))) == first


def test_local_evolution_is_reproducible() -> None:
    def run():
        return summary(search(RegularizedEvolution(population_size=4, sample_size=2), LocalExecutor(workers=2), trials=20))

    first = run()
    assert len(first) == 20 and first == run()


def _seed_of(number: int) -> int:
    from nasforge.core.seeding import derive_seed

    return derive_seed(5, number)


@pytest.mark.parametrize("retries", [0, 1])
def test_killed_worker_retries_or_fails_the_trial(tmp_path: Path, retries: int) -> None:
    estimator = FaultyEstimator(jitter_s=0.01, kill_seed=_seed_of(3), marker_dir=str(tmp_path))
    result = search(RandomSearch(), LocalExecutor(workers=2, max_retries=retries), estimator, trials=8)
    assert len(result.trials) == 8
    victim = result.trials[3]
    if retries:
        assert victim.ok and victim.extras["attempts"] == 2
        assert summary(result)[3][:3] == summary(search(RandomSearch(), trials=8))[3][:3]
    else:
        assert not victim.ok and "worker process died (killed by SIGKILL)" in victim.error
    assert all(t.ok for t in result.trials if t.number != 3)


def test_worker_killed_on_every_attempt_fails_after_retries(tmp_path: Path) -> None:
    estimator = FaultyEstimator(kill_seed=_seed_of(1), marker_dir=str(tmp_path), kill_always=True)
    result = search(RandomSearch(), LocalExecutor(workers=2, max_retries=2), estimator, trials=4)
    assert len(result.trials) == 4
    assert "died" in result.trials[1].error and "after 3 attempts" in result.trials[1].error


@pytest.mark.parametrize("make", [lambda: LocalExecutor(workers=2, timeout_s=0.5), lambda: SequentialExecutor(timeout_s=0.5)])
def test_trial_past_timeout_fails_with_the_reason(make) -> None:
    estimator = FaultyEstimator(hang_seed=_seed_of(2), hang_s=30.0)
    began = time.monotonic()
    result = search(RandomSearch(), make(), estimator, trials=5)
    assert time.monotonic() - began < 20
    assert len(result.trials) == 5 and not result.trials[2].ok
    assert "past timeout_s=0.5" in result.trials[2].error
    assert all(t.ok for t in result.trials if t.number != 2)


def test_time_budget_stops_a_long_trial() -> None:
    estimator = FaultyEstimator(hang_seed=_seed_of(1), hang_s=60.0)
    began = time.monotonic()
    runner = Runner(ToySpace(), RandomSearch(), estimator, SingleMetric(), budget=Budget(seconds=2.0), seed=5,
                    executor=LocalExecutor(workers=2))
    result = runner.run()
    assert time.monotonic() - began < 15
    assert "time budget" in result.stopped_because and [t.number for t in result.trials] in ([], [0])


_DRIVER = """
import sys
from nasforge.objectives.basic import SingleMetric
from nasforge.runner.local_executor import LocalExecutor
from nasforge.runner.loop import Budget, Runner
from nasforge.strategies.evolution import RegularizedEvolution
from nasforge.testing import ToySpace
from nasforge.testing.faults import FaultyEstimator

if __name__ == "__main__":
    runner = Runner(ToySpace(), RegularizedEvolution(population_size=4, sample_size=2), FaultyEstimator(jitter_s=0.15),
                    SingleMetric(), budget=Budget(trials=24), seed=5, run_dir=sys.argv[1], checkpoint_seconds=0.3,
                    executor=LocalExecutor(workers=2))
    runner.run(resume=len(sys.argv) > 2)
    runner.store.close()
"""


def test_driver_sigkill_then_resume_gives_the_same_trials(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run_dir = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, str(script), str(run_dir)], env=env)
    store = run_dir / STORE_FILE
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if store.is_file() and len(TrialStore(store, readonly=True)) >= 8:
            break
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert (run_dir / "checkpoint.pt").is_file()
    subprocess.run([sys.executable, str(script), str(run_dir), "resume"], env=env, check=True, timeout=120)
    resumed = TrialStore(store, readonly=True).trials()
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, str(script), str(whole)], env=env, check=True, timeout=120)
    uninterrupted = TrialStore(whole / STORE_FILE, readonly=True).trials()
    assert len(resumed) == 24
    assert [(t.number, t.arch, t.seed, t.values) for t in resumed] == [(t.number, t.arch, t.seed, t.values) for t in uninterrupted]


def test_refused_combinations_in_python() -> None:
    with pytest.raises(ConfigError, match="architecture parameters"):
        Runner(ToySpace(), DARTS(), FaultyEstimator(), SingleMetric(), budget=Budget(trials=2), executor=LocalExecutor(workers=2))


@pytest.mark.parametrize(
    "parts, says",
    [
        ("strategy: darts\nestimator: dnas", "architecture parameters"),
        ("strategy: random\nestimator: supernet", "shared state (a supernet)"),
    ],
)
def test_cli_refuses_parallel_trials_it_cannot_run(tmp_path: Path, parts: str, says: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(textwrap.dedent(f"space: {{type: nb201, C: 4, N: 1}}\n{parts}\nbudget: {{trials: 2}}\n"))
    done = subprocess.run(
        [sys.executable, "-m", "nasforge.cli", "search", str(config), "--workers", "2", "--run-dir", str(tmp_path / "r")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0] and "1 worker" in lines[0]
    assert not (tmp_path / "r").exists()
