"""Hardware-aware NAS: cost models, latency tables, the with_latency estimator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nasforge.core import registry
from nasforge.core.errors import ConfigError
from nasforge.hardware.costmodels import COST_MODELS, BlockFeatures, evaluate, make_cost_model
from nasforge.hardware.profile import LatencyTable, measure_model, profile_space
from nasforge.objectives.basic import SingleMetric
from nasforge.objectives.counters import count_flops
from nasforge.ops.primitives import OPS
from nasforge.runner import Budget, Runner
from nasforge.spaces.nb201 import NB201_OPS, NB201Space
from nasforge.strategies.random_search import RandomSearch


def synthetic(n: int, seed: int = 0) -> tuple[BlockFeatures, np.ndarray]:
    """latency = 1.3 * sum of per-op costs + 0.5 ms, over 8 positions of 4 ops (op 0 free)."""
    rng = np.random.default_rng(seed)
    op_cost = np.array([0.0, 0.2, 0.5, 1.0])
    tokens = rng.integers(0, 4, size=(n, 8))
    features = BlockFeatures(tokens, op_cost[tokens], 4)
    return features, 1.3 * features.costs.sum(axis=1) + 0.5


def test_linear_on_sum_recovers_scale_and_overhead_naive_sum_is_biased() -> None:
    train, y_train = synthetic(50)
    test, y_test = synthetic(200, seed=1)
    linear = evaluate(y_test, make_cost_model("linear_sum").fit(train, y_train).predict(test))
    naive = evaluate(y_test, make_cost_model("naive_sum").fit(train, y_train).predict(test))
    assert linear["rmse"] < 1e-9 and linear["within_10pct"] == 1.0
    assert naive["spearman"] > 0.999  # right ranking ...
    assert (
        naive["within_10pct"] < 0.2 and np.mean(make_cost_model("naive_sum").predict(test) - y_test) < -0.5
    )  # ... too low


@pytest.mark.parametrize("name", sorted(COST_MODELS))
def test_every_cost_model_ranks_the_synthetic_latencies(name: str) -> None:
    train, y_train = synthetic(150)
    test, y_test = synthetic(200, seed=1)
    scores = evaluate(y_test, make_cost_model(name, seed=0).fit(train, y_train).predict(test))
    assert scores["spearman"] > 0.9, scores


def test_unknown_cost_model_lists_the_names() -> None:
    with pytest.raises(ConfigError, match="linear_sum_count"):
        make_cost_model("linear")


def test_nb201_op_flops_sum_is_the_network_flops_up_to_a_constant() -> None:
    """The latency benchmark's NB201 FLOPs baseline: per-op FLOPs summed equal count_flops(build)."""
    space = NB201Space()
    per_op = {
        op: sum(5 * count_flops(OPS[op](c, c, 1), (c, s, s)) for c, s in ((16, 32), (32, 16), (64, 8)))
        for op in NB201_OPS
    }
    offsets = set()
    for arch in (space.sample(np.random.default_rng(seed)) for seed in range(3)):
        offsets.add(count_flops(space.build(arch), (3, 32, 32)) - sum(per_op[str(v)] for v in arch.values()))
    assert len(offsets) == 1


@pytest.fixture(scope="module")
def small_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[NB201Space, Path]:
    space = NB201Space(C=4, N=1)
    table = profile_space(space, (1, 3, 8, 8), warmup=1, repeats=2, calibrate=1)
    path = tmp_path_factory.mktemp("hw") / "table.json"
    table.save(path)
    return space, path


def test_profile_writes_a_table_that_loads_merges_and_predicts(small_table: tuple[NB201Space, Path]) -> None:
    space, path = small_table
    table = LatencyTable.load(path)
    assert table.device["cpu"] and table.device["torch"] and table.device["threads"] == 1
    assert len(table.layers) == 3 * 6  # one cell per stage, six edges each
    assert len(table.blocks) == 5 * 3  # five ops at three shapes
    assert all(ms > 0 for ms in table.blocks.values())
    arch = space.sample(np.random.default_rng(0))
    assert table.predict(arch) == pytest.approx(table.overhead_ms + sum(table.blocks[k] for k in table.keys(arch)))
    half = dict(list(table.blocks.items())[:7])
    rest = dict(list(table.blocks.items())[7:])
    merged = LatencyTable(table.device, table.input_shape, table.layers, half).merge(
        LatencyTable(table.device, table.input_shape, table.layers, rest)
    )
    assert merged.blocks == table.blocks
    other = LatencyTable({**table.device, "cpu": "another"}, table.input_shape, table.layers, rest)
    with pytest.raises(ConfigError, match="different devices"):
        table.merge(other)
    assert measure_model(space.build(arch), table.input_shape, warmup=1, repeats=2) > 0


def test_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nasforge profile"):
        LatencyTable.load(tmp_path / "none.json")


def test_latency_constrained_search_never_returns_an_infeasible_arch(small_table: tuple[NB201Space, Path], shared_data: Path) -> None:
    space, path = small_table
    table = LatencyTable.load(path)
    latencies = sorted(table.predict(a) for a in (space.sample(np.random.default_rng(s)) for s in range(200)))
    bound = latencies[len(latencies) // 4]  # only about a quarter of the space is feasible
    estimator = registry.create(
        "estimator",
        "with_latency",
        {"inner": {"type": "nb201_table", "devices": []}, "table": str(path)},
        context={"space": space},
    )
    objective = SingleMetric(metric="val_acc", constraints=[{"metric": "latency_ms", "max": bound}])
    result = Runner(space, RandomSearch(), estimator, objective, budget=Budget(trials=60)).run()
    unconstrained = max(result.trials, key=lambda t: t.metrics["val_acc"])
    assert unconstrained.metrics["latency_ms"] > bound  # the bound matters ...
    best = result.best(5)
    assert best and all(t.feasible and t.metrics["latency_ms"] <= bound for t in best)  # ... and holds
    assert json.loads(path.read_text())["layers"]


def test_profile_command_writes_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nasforge.cli import main

    out = tmp_path / "t.json"
    argv = ["profile", "--space", "nb201", "--space-options", "{C: 4, N: 1}", "--input-size", "3,8,8", "-o", str(out)]
    assert main([*argv, "--warmup", "1", "--repeats", "2", "--check", "2"]) == 0
    assert len(LatencyTable.load(out).blocks) == 15
    assert "Spearman" in capsys.readouterr().out
    assert main([*argv[:-2], "--input-size", "3,8", "-o", str(out)]) == 2


def test_costmodel_cli_fit_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`nasforge costmodel fit` measures children and fits; `eval` compares with the naive sum."""
    from nasforge.cli import main
    from nasforge.hardware.fitting import FittedCostModel

    table = tmp_path / "table.json"
    space = ["--space", "nb201", "--space-options", "{C: 2, N: 1}"]
    assert main(["profile", *space, "--input-size", "1,8,8", "-o", str(table), "--repeats", "2", "--warmup", "1"]) == 0
    model = tmp_path / "cm.pkl"
    assert main(["costmodel", "fit", *space, "--table", str(table), "--archs", "6", "--repeats", "2", "-o", str(model)]) == 0
    fitted = FittedCostModel.load(model)
    archs = [fitted.space().sample(np.random.default_rng(i)) for i in range(3)]
    assert fitted.predict(archs).shape == (3,)
    capsys.readouterr()
    assert main(["costmodel", "eval", str(model), "--archs", "4", "--repeats", "2"]) == 0
    assert "naive sum" in capsys.readouterr().out
    assert main(["costmodel", "eval", str(tmp_path / "missing.pkl")]) == 2
    assert main(["costmodel", "fit", "--space", "nb201"]) == 2
