"""Hardware-aware NAS: cost models, latency tables, the with_latency estimator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nasforge.core import registry
from nasforge.core.errors import ConfigError
from nasforge.hardware.costmodels import BlockFeatures, evaluate, make_cost_model
from nasforge.hardware.profile import LatencyTable, measure_model, profile_space
from nasforge.nn.counters import count_flops
from nasforge.nn.ops import OPS
from nasforge.objectives.basic import SingleMetric
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


@pytest.mark.parametrize("name", ["gbt", "linear_sum", "linear_sum_count", "lstm", "mlp", "naive_sum"])
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


@pytest.mark.parametrize("text", ['{"device": {}, "input_sh', '{"results": [1, 2]}', "[1, 2]", '{"device": 1, "input_shape": [1], "layers": 2, "blocks": 3}'])
def test_corrupt_or_foreign_table_is_a_config_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "table.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path} is not a latency table"):
        LatencyTable.load(path)


def test_table_saves_atomically_into_a_new_folder(small_table: tuple[NB201Space, Path], tmp_path: Path) -> None:
    table = LatencyTable.load(small_table[1])
    path = tmp_path / "new" / "table.json"
    table.save(path)
    assert LatencyTable.load(path) == table and [p.name for p in path.parent.iterdir()] == ["table.json"]


def test_whole_networks_are_measured_with_the_tables_threads(
    small_table: tuple[NB201Space, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`profile --check` and `costmodel fit|eval` time whole networks as the table's blocks were."""
    import nasforge.hardware.fitting as fitting
    import nasforge.hardware.profile as profile
    from nasforge.core.threads import pinned_threads
    from nasforge.hardware.profile import table_vs_measured

    space, path = small_table
    table = LatencyTable.load(path)
    assert table.threads == 1 and LatencyTable({}, [1], [], {}).threads is None
    pinned = []

    def spy(*args: object, threads: int | None = None, **kwargs: object) -> float:
        pinned.append(threads)
        return 1.0

    monkeypatch.setattr(profile, "measure_model", spy)
    monkeypatch.setattr(fitting, "measure_model", spy)
    with pinned_threads(2):  # the process runs with other threads than the table was profiled with
        table_vs_measured(space, table, 2, warmup=1, repeats=1)
        fitting.measure_children(space, table, 2, seed=0, warmup=1, repeats=1)
    assert pinned == [1, 1, 1, 1]


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


def test_costmodel_cli_fit_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`nasforge costmodel fit` measures children and fits; `eval` compares with the naive sum on
    children the model was not fitted on."""
    from nasforge.cli import main
    from nasforge.hardware.fitting import FittedCostModel

    table = tmp_path / "table.json"
    space = ["--space", "nb201", "--space-options", "{C: 2, N: 1}"]
    assert main(["profile", *space, "--input-size", "1,8,8", "-o", str(table), "--repeats", "2", "--warmup", "1"]) == 0
    model = tmp_path / "cm.pkl"
    fit = ["costmodel", "fit", *space, "--table", str(table), "--archs", "6", "--repeats", "2", "--seed", "1"]
    assert main([*fit, "-o", str(model)]) == 0
    fitted = FittedCostModel.load(model)
    assert len(set(fitted.fit_archs)) == 6
    archs = [fitted.space().sample(np.random.default_rng(i)) for i in range(3)]
    assert fitted.predict(archs).shape == (3,)
    from nasforge.hardware.latency import LatencyModel

    latency = LatencyModel.load(cost_model=str(model))  # what with_latency / latency_bounded use
    assert latency.predict(archs[0]) == pytest.approx(float(fitted.predict(archs[:1])[0]))
    capsys.readouterr()
    evaluated: list = []
    monkeypatch.setattr(FittedCostModel, "predict", lambda self, archs: evaluated.extend(archs) or np.ones(len(archs)))
    # eval draws with seed + 1, here the fit's seed: the fit's archs must still be left out
    assert main(["costmodel", "eval", str(model), "--archs", "4", "--repeats", "2", "--seed", "0"]) == 0
    assert "naive sum" in capsys.readouterr().out
    assert len(evaluated) == 4 and not set(evaluated) & set(fitted.fit_archs)
    del fitted.fit_archs  # a model saved before fit_archs was recorded still loads and evaluates
    fitted.save(tmp_path / "old.pkl")
    assert FittedCostModel.load(tmp_path / "old.pkl").fit_archs == []
    assert main(["costmodel", "eval", str(tmp_path / "old.pkl"), "--archs", "2", "--repeats", "1"]) == 0
    assert "does not record its training archs" in capsys.readouterr().out
    assert main(["costmodel", "eval", str(tmp_path / "missing.pkl")]) == 2
    assert main(["costmodel", "fit", "--space", "nb201"]) == 2


# -- latency bound inside the space (one-shot and any strategy) ------------------------------------


def test_constrained_space_hides_the_archs_that_break_its_predicate() -> None:
    from nasforge.core.errors import InvalidArchError
    from nasforge.core.space import ConstrainedSpace
    from nasforge.testing import ToySpace

    space = ConstrainedSpace(ToySpace(), lambda arch: int(arch["width"]) <= 16, "width <= 16")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(50)] + [space.mutate(space.sample(rng), rng) for _ in range(50)]
    archs += space.neighbours(archs[0]) + list(space.enumerate())
    assert archs and all(int(a["width"]) <= 16 for a in archs)
    assert len(list(space.enumerate())) == 36
    wide = archs[0].with_value("width", 32)
    with pytest.raises(InvalidArchError, match="width <= 16"):
        space.validate(wide)
    with pytest.raises(InvalidArchError, match="width <= 16"):
        space.parse(str(wide))
    assert space.parse(str(archs[0])) == archs[0]
    assert not hasattr(space, "supernet")  # attributes come from the inner space, absent ones stay absent


def test_constrained_space_samples_with_the_inner_sampler_and_reports_its_size() -> None:
    from nasforge.core.space import ConstrainedSpace
    from nasforge.testing import ToySpace

    class DeepOnly(ToySpace):
        """Only depth-3 archs are valid; its own sampler draws them directly, its size counts them."""

        draws = 0

        def is_valid(self, arch: object) -> bool:
            return int(arch["depth"]) == 3  # type: ignore[index]

        def sample(self, rng: np.random.Generator) -> object:
            DeepOnly.draws += 1
            return super().sample(rng).with_value("depth", 3)

        def size(self) -> int:
            return 24

    inner = DeepOnly()
    space = ConstrainedSpace(inner, lambda arch: int(arch["width"]) <= 16, "width <= 16")
    archs = [space.sample(np.random.default_rng(s)) for s in range(20)]
    assert DeepOnly.draws >= 20 and all(int(a["width"]) <= 16 and a["depth"] == 3 for a in archs)
    assert space.size() == inner.size() == 24  # an upper bound: the inner space's, not the choices' product (72)


def test_constrained_space_no_arch_meets_is_a_config_error_naming_the_constraint() -> None:
    from nasforge.core.space import ConstrainedSpace
    from nasforge.testing import ToySpace

    space = ConstrainedSpace(ToySpace(), lambda arch: False, "the latency bound of 0.1 ms")
    with pytest.raises(ConfigError, match="meets the latency bound of 0.1 ms; loosen"):
        space.sample(np.random.default_rng(0))


@pytest.fixture(scope="module")
def digits_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A latency table of NB201 (C=4, N=1) at the bundled digits' input, 1x8x8."""
    table = profile_space(NB201Space(C=4, N=1, in_channels=1), (1, 1, 8, 8), warmup=1, repeats=3, calibrate=1)
    path = tmp_path_factory.mktemp("hw") / "digits_table.json"
    table.save(path)
    return path


def _bounded(table: Path, quantile: float) -> tuple[object, float]:
    """The latency_bounded NB201 space with a bound leaving about ``quantile`` of the archs."""
    context = {"in_channels": 1, "num_classes": 10, "input_size": (8, 8)}
    loaded = LatencyTable.load(table)
    sampled = sorted(loaded.predict(NB201Space().sample(np.random.default_rng(s))) for s in range(300))
    bound = sampled[int(quantile * len(sampled))]
    options = {"inner": {"type": "nb201", "C": 4, "N": 1}, "table": str(table), "max_ms": bound}
    return registry.create("space", "latency_bounded", options, context=context), bound


@pytest.mark.parametrize("rule", ["spos", "fairnas"])
def test_one_shot_search_under_a_latency_bound_never_trains_nor_proposes_a_slow_arch(
    digits_table: Path, rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nasforge.estimators.supernet import SupernetEstimator
    from nasforge.oneshot.trainer import SupernetTrainer
    from nasforge.strategies.evolution import RegularizedEvolution
    from nasforge.tasks.datasets import Digits

    space, bound = _bounded(digits_table, 0.3)
    trained = []
    original = SupernetTrainer.train_step

    def spy(self: SupernetTrainer, train: object, paths: list) -> float:
        trained.extend(paths)
        return original(self, train, paths)

    monkeypatch.setattr(SupernetTrainer, "train_step", spy)
    estimator = SupernetEstimator(rule=rule, epochs=1, batch_size=64, bn_batches=1, space=space)
    strategy = RegularizedEvolution(population_size=4, sample_size=2)
    result = Runner(
        space, strategy, estimator, SingleMetric(), budget=Budget(trials=8), run_dir=tmp_path, data=Digits(train_limit=200).load(0)
    ).run()
    latency = space.latency_model.predict
    assert trained and all(latency(a) <= bound for a in trained)
    assert all(t.ok and latency(t.arch) <= bound for t in result.trials), [t.error for t in result.trials]
    assert latency(result.best(1)[0].arch) <= bound
    unconstrained = NB201Space(C=4, N=1)
    assert np.mean([latency(unconstrained.sample(np.random.default_rng(s))) > bound for s in range(100)]) > 0.5


def test_a_bound_no_arch_meets_is_a_config_error(digits_table: Path) -> None:
    options = {"inner": {"type": "nb201", "C": 4, "N": 1}, "table": str(digits_table), "max_ms": 1e-6}
    with pytest.raises(ConfigError, match="no arch of 'nb201' fits max_ms"):
        registry.create("space", "latency_bounded", options)
    with pytest.raises(ConfigError, match="exactly one latency source"):
        registry.create("space", "latency_bounded", {**options, "cost_model": "x.pkl"})


def test_profile_then_bounded_search_then_train_reports_predicted_and_measured_latency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two commands of docs/hardware.md; the final model is timed against its prediction.
    The table is named relative to the working directory; the run and its model work from any."""
    import yaml

    from nasforge.cli import main

    monkeypatch.chdir(tmp_path)
    table = Path("cpu.json")
    profile = ["profile", "--space", "nb201", "--space-options", "{C: 4, N: 1}", "--input-size", "1,8,8"]
    assert main([*profile, "-o", str(table), "--warmup", "1", "--repeats", "3"]) == 0
    loaded = LatencyTable.load(table)
    bound = float(np.median([loaded.predict(NB201Space().sample(np.random.default_rng(s))) for s in range(100)]))
    config = {
        "name": "bounded",
        "threads": 1,
        "data": {"type": "digits", "train_limit": 200, "test_limit": 100},
        "space": {"type": "latency_bounded", "inner": {"type": "nb201", "C": 4, "N": 1}, "table": str(table), "max_ms": bound},
        "strategy": {"type": "random"},
        "estimator": {"type": "supernet", "rule": "spos", "epochs": 1, "batch_size": 64, "bn_batches": 1},
        "budget": {"trials": 4},
        "train": {"epochs": 1},
    }
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(config))
    assert main(["search", str(tmp_path / "search.yaml"), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    assert "measured/predicted" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "final" / "metrics.json").read_text())
    assert metrics["latency_predicted_ms"] <= bound and metrics["latency_measured_ms"] > 0
    assert metrics["latency_measured_over_predicted"] == pytest.approx(
        metrics["latency_measured_ms"] / metrics["latency_predicted_ms"]
    )
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["space"]["table"] == str(tmp_path / "cpu.json")
    model = yaml.safe_load((tmp_path / "run" / "final" / "model.yaml").read_text())
    assert model["space"] == {"type": "nb201", "C": 4, "N": 1}  # the network, without the bound and its table
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["test", str(tmp_path / "run" / "final")]) == 0


def test_latency_is_not_compared_for_another_input_shape(small_table: tuple[NB201Space, Path]) -> None:
    from nasforge.hardware.latency import LatencyModel

    space, path = small_table  # profiled at 3x8x8
    arch = space.sample(np.random.default_rng(0))
    latency = LatencyModel.load(table=str(path))
    assert latency.compare(space.build(arch), arch, (1, 1, 8, 8)) == {}
    assert set(latency.compare(space.build(arch), arch, (1, 3, 8, 8))) == {
        "latency_predicted_ms", "latency_measured_ms", "latency_measured_over_predicted"
    }


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_measuring_on_cuda_without_a_gpu_is_a_clear_error() -> None:
    import torch

    with pytest.raises(ConfigError, match="no CUDA device"):
        measure_model(torch.nn.Identity(), (1, 2), device="cuda")


def test_measure_model_pins_threads_then_restores_them() -> None:
    import torch

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x

    before = torch.get_num_threads()
    measure_model(Probe(), (1, 2), warmup=1, repeats=2, threads=2)
    assert set(seen) == {2} and torch.get_num_threads() == before


# -- energy (RAPL) ---------------------------------------------------------------------------------


@pytest.fixture
def fake_rapl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A powercap folder whose package counter the burner module below advances by 1000 µJ a call."""
    from nasforge.hardware import profile

    folder = tmp_path / "intel-rapl:0"
    folder.mkdir()
    (folder / "energy_uj").write_text("5000\n")
    (folder / "max_energy_range_uj").write_text("262143328850\n")
    monkeypatch.setattr(profile, "RAPL_GLOB", str(tmp_path / "intel-rapl*" / "energy_uj"))
    return folder / "energy_uj"


def _burner(counter: Path) -> object:
    import torch

    class Burner(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            top = int(counter.with_name("max_energy_range_uj").read_text())
            counter.write_text(str((int(counter.read_text()) + 1000) % top))  # wraps around as RAPL does
            return x

    return Burner()


def test_energy_is_read_from_a_rapl_counter(fake_rapl: Path) -> None:
    from nasforge.hardware.profile import energy_counter, measure_energy

    assert energy_counter() == fake_rapl
    assert measure_energy(_burner(fake_rapl), (1, 2), min_seconds=0.01) == pytest.approx(1.0)  # 1000 µJ = 1 mJ a call
    fake_rapl.write_text("262143327350")  # 1,500 µJ under the top of its range: wraps at the second call
    assert measure_energy(_burner(fake_rapl), (1, 2), min_seconds=0.01) == pytest.approx(1.0)
    assert int(fake_rapl.read_text()) < 262143327350


def test_profile_energy_records_blocks_and_predicts_an_arch(fake_rapl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nasforge.cli import main

    out = fake_rapl.parents[1] / "t.json"
    argv = ["profile", "--space", "nb201", "--space-options", "{C: 2, N: 1}", "--input-size", "1,8,8", "-o", str(out)]
    assert main([*argv, "--warmup", "1", "--repeats", "1", "--energy"]) == 0
    assert "energy per forward of 15 blocks" in capsys.readouterr().out
    table = LatencyTable.load(out)
    assert set(table.energy_mj) == set(table.blocks)  # the fake counter does not move: 0 mJ each
    assert table.predict_energy(NB201Space().sample(np.random.default_rng(0))) == 0.0
    # the prediction sums the arch's blocks, as the latency prediction does
    table.energy_mj = {block: 1.0 + i for i, block in enumerate(table.blocks)}
    table.blocks = dict(table.energy_mj)
    arch = NB201Space(C=2, N=1).sample(np.random.default_rng(1))
    expected = table.predict(arch) - table.overhead_ms
    assert expected > 0 and table.predict_energy(arch) == pytest.approx(expected)


@pytest.mark.parametrize("layout", ["absent", "unreadable"])
def test_profile_energy_without_a_readable_counter_says_so_in_one_line(
    layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nasforge.cli import main
    from nasforge.hardware import profile

    if layout == "unreadable":
        (tmp_path / "intel-rapl:0" / "energy_uj").mkdir(parents=True)  # reading it fails, as for a non-root user
    monkeypatch.setattr(profile, "RAPL_GLOB", str(tmp_path / "intel-rapl*" / "energy_uj"))
    out = tmp_path / "t.json"
    argv = ["profile", "--space", "nb201", "--space-options", "{C: 2, N: 1}", "--input-size", "1,8,8", "-o", str(out)]
    assert main([*argv, "--warmup", "1", "--repeats", "1", "--energy"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "energy" in line]
    assert lines[0].startswith("energy not measured: ")
    assert ("not readable" in lines[0]) == (layout == "unreadable")
    table = LatencyTable.load(out)
    assert table.energy_mj == {}
    with pytest.raises(ConfigError, match="--energy"):
        table.predict_energy(NB201Space().sample(np.random.default_rng(0)))


# -- ONNX Runtime backend --------------------------------------------------------------------------


def _tiny_conv_net() -> object:
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten())


def test_measure_model_on_onnxruntime_times_an_exported_session() -> None:
    ort = pytest.importorskip("onnxruntime")
    from nasforge.hardware.profile import device_description

    assert measure_model(_tiny_conv_net(), (1, 1, 8, 8), device="onnxruntime", warmup=1, repeats=3, threads=1) > 0
    description = device_description("onnxruntime")
    assert description["onnxruntime"] == ort.__version__ and description["provider"] == "CPUExecutionProvider"


def test_profile_command_on_onnxruntime_writes_a_table_of_that_device(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from nasforge.cli import main

    out = tmp_path / "t.json"
    argv = ["profile", "--space", "nb201", "--space-options", "{C: 2, N: 1}", "--input-size", "1,8,8", "-o", str(out)]
    assert main([*argv, "--warmup", "1", "--repeats", "1", "--device", "onnxruntime"]) == 0
    table = LatencyTable.load(out)
    assert table.device["device"] == "onnxruntime" and table.device["onnxruntime"]
    assert len(table.blocks) == 15 and all(ms > 0 for ms in table.blocks.values())


def test_onnxruntime_without_the_package_is_a_config_error_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ConfigError, match="pip install onnxruntime onnx"):
        measure_model(_tiny_conv_net(), (1, 1, 8, 8), device="onnxruntime")


def _fake_terminal(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, float | None]]:
    """A terminal console patched in (force_terminal, into a buffer); the bar updates it saw."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    import nasforge.cli.console as cli_console

    monkeypatch.setattr(cli_console, "console", Console(force_terminal=True, file=io.StringIO(), width=120))
    updates: list[tuple[str, float, float | None]] = []
    real_update = Progress.update

    def update(self: Progress, task_id, **kwargs) -> None:  # noqa: ANN001
        real_update(self, task_id, **kwargs)
        task = self._tasks[task_id]
        updates.append((str(task.description), task.completed, task.total))

    monkeypatch.setattr(Progress, "update", update)
    return updates


def test_profile_and_costmodel_show_a_bar_per_block_and_child_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nasforge.cli import main

    updates = _fake_terminal(monkeypatch)
    table = tmp_path / "t.json"
    space = ["--space", "nb201", "--space-options", "{C: 4, N: 1}"]
    assert main(["profile", *space, "--input-size", "3,8,8", "-o", str(table), "--warmup", "1", "--repeats", "1"]) == 0
    assert [(c, t) for d, c, t in updates if d == "blocks measured"] == [(float(i), 15) for i in range(1, 16)]
    updates.clear()
    fit = ["costmodel", "fit", *space, "--table", str(table), "--archs", "3", "--repeats", "1", "-o", str(tmp_path / "m.pkl")]
    assert main(fit) == 0
    assert [(c, t) for d, c, t in updates if d == "children measured"] == [(1.0, 3), (2.0, 3), (3.0, 3)]


def test_profile_and_costmodel_print_no_progress_into_a_pipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nasforge.cli import main

    table = tmp_path / "t.json"
    space = ["--space", "nb201", "--space-options", "{C: 2, N: 1}"]
    assert main(["profile", *space, "--input-size", "1,8,8", "-o", str(table), "--warmup", "1", "--repeats", "1"]) == 0
    fit = ["costmodel", "fit", *space, "--table", str(table), "--archs", "2", "--repeats", "1", "-o", str(tmp_path / "m.pkl")]
    assert main(fit) == 0
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert "blocks measured" not in text and "children measured" not in text
        assert "━" not in text and "\x1b[" not in text
