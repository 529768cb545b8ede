"""The ``ray`` executor (#14 points 1 and 3): same trials as ``local``, faults, the missing extra."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from nasforge.core.errors import ConfigError
from nasforge.core.seeding import derive_seed
from nasforge.objectives.basic import SingleMetric
from nasforge.runner.executors import make_executor, with_workers
from nasforge.runner.local_executor import LocalExecutor
from nasforge.runner.loop import Budget, Runner
from nasforge.strategies.random_search import RandomSearch
from nasforge.testing import ToySpace
from nasforge.testing.faults import FaultyEstimator

INSTALL = 'Ray is not installed: pip install "nasforge[ray]" (or pip install "ray>=2.9")'


def search(executor, estimator=None, trials=12):
    runner = Runner(
        ToySpace(),
        RandomSearch(),
        estimator or FaultyEstimator(jitter_s=0.03),
        SingleMetric(),
        budget=Budget(trials=trials),
        seed=5,
        executor=executor,
    )
    return runner.run()


def summary(result):
    return [(t.number, str(t.arch), t.seed, t.status.value, t.values) for t in result.trials]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module's fault tests (the executor joins it and leaves it running)."""
    ray = pytest.importorskip("ray", reason=INSTALL)
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1", configure_logging=False
    )
    yield ray
    ray.shutdown()


def test_missing_extra_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install nasforge\[ray\]"):
        make_executor({"type": "ray", "workers": 2})
    with pytest.raises(ConfigError, match=r"pip install nasforge\[ray\]"):
        make_executor(with_workers({"type": "ray"}, 2))


def test_ray_random_matches_local_and_starts_its_own_ray() -> None:
    ray = pytest.importorskip("ray", reason=INSTALL)
    assert not ray.is_initialized()
    executor = make_executor({"type": "ray", "workers": 2})
    assert executor.workers == 2
    through_ray = summary(search(executor))
    assert not ray.is_initialized()  # the Ray it started is shut down by close()
    assert through_ray == summary(search(LocalExecutor(workers=2)))
    assert all(status == "complete" for _, _, _, status, _ in through_ray)


@pytest.mark.parametrize("retries", [0, 1])
def test_killed_ray_worker_retries_or_fails_the_trial(ray_cluster, tmp_path: Path, retries: int) -> None:
    from nasforge.runner.ray_executor import RayExecutor

    estimator = FaultyEstimator(jitter_s=0.01, kill_seed=derive_seed(5, 3), marker_dir=str(tmp_path))
    result = search(RayExecutor(workers=2, max_retries=retries), estimator, trials=8)
    assert ray_cluster.is_initialized()  # joined, not owned: left running
    assert len(result.trials) == 8
    victim = result.trials[3]
    if retries:
        assert victim.ok and victim.extras["attempts"] == 2
        assert summary(result)[3][:3] == summary(search(LocalExecutor(workers=2), trials=8))[3][:3]
    else:
        assert not victim.ok and "Ray worker died" in victim.error
        assert "ActorDiedError" in victim.error or "WorkerCrashedError" in victim.error
    assert all(t.ok for t in result.trials if t.number != 3)


def test_ray_trial_past_timeout_fails_with_the_reason(ray_cluster) -> None:
    from nasforge.runner.ray_executor import RayExecutor

    estimator = FaultyEstimator(hang_seed=derive_seed(5, 2), hang_s=60.0)
    began = time.monotonic()
    result = search(RayExecutor(workers=2, timeout_s=1.0), estimator, trials=5)
    assert time.monotonic() - began < 30
    assert len(result.trials) == 5 and not result.trials[2].ok
    assert "past timeout_s=1" in result.trials[2].error
    assert all(t.ok for t in result.trials if t.number != 2)


def test_ray_time_budget_stops_a_long_trial(ray_cluster) -> None:
    from nasforge.runner.ray_executor import RayExecutor

    estimator = FaultyEstimator(hang_seed=derive_seed(5, 1), hang_s=60.0)
    began = time.monotonic()
    runner = Runner(
        ToySpace(),
        RandomSearch(),
        estimator,
        SingleMetric(),
        budget=Budget(seconds=3.0),
        seed=5,
        executor=RayExecutor(workers=2),
    )
    result = runner.run()
    assert time.monotonic() - began < 20
    assert "time budget" in result.stopped_because and [t.number for t in result.trials] in ([], [0])
