"""Search under a cost budget: lookup tables, constrained strategies, the architecture generator."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nasforge.core.arch import Arch, Choice
from nasforge.core.differentiable import ArchParameters
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.space import SearchSpace
from nasforge.core.trial import Result
from nasforge.estimators.supernet import SupernetEstimator
from nasforge.hardware.lut import CostBudget, CostTable, build_cost_table, load_cost_table
from nasforge.hardware.profile import profile_space
from nasforge.nn.counters import count_flops, count_params
from nasforge.nn.mixed import MixedOp, Supernet
from nasforge.objectives.basic import SingleMetric
from nasforge.runner import Budget, Runner
from nasforge.spaces.mobilenet_spaces import FBNetSpace, MnasNetSpace, ProxylessSpace, SPOSSpace
from nasforge.spaces.nb201 import NB201Space
from nasforge.strategies.constrained import ConstrainedEvolution, RejectionRandomSearch
from nasforge.strategies.generator import ArchitectureGenerator
from nasforge.tasks.splits import DataSplits
from nasforge.testing import drive

OPS = ("skip", "conv3", "conv5")


class ChainSpace(SearchSpace):
    """A toy blockwise space: a stem, ``n`` layers each skip / conv3x3 / conv5x5 at 8 channels,
    a linear classifier on 8x8 single-channel inputs (3**n archs)."""

    def __init__(self, n: int = 4) -> None:
        self.n = n

    def choices(self) -> Mapping[str, Choice]:
        return {f"layer{i}": Choice(f"layer{i}", OPS) for i in range(self.n)}

    @staticmethod
    def _op(name: str) -> nn.Module:
        if name == "skip":
            return nn.Identity()
        k = int(name[-1])
        return nn.Sequential(nn.Conv2d(8, 8, k, padding=k // 2, bias=False), nn.BatchNorm2d(8), nn.ReLU())

    @staticmethod
    def _network(layers: list[nn.Module]) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
        )

    def build(self, arch: Arch) -> nn.Module:
        return self._network([self._op(str(arch[f"layer{i}"])) for i in range(self.n)])

    def supernet(self) -> Supernet:
        layers: list[nn.Module] = [MixedOp(f"layer{i}", {op: self._op(op) for op in OPS}) for i in range(self.n)]
        return Supernet(self._network(layers))


SHAPE = (1, 8, 8)


def _toy_data() -> DataSplits:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, *SHAPE, generator=generator)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, :4].mean((1, 2)) > 0).long()
    train, valid = TensorDataset(x[:256], y[:256]), TensorDataset(x[256:], y[256:])
    return DataSplits("toy", train, valid, valid, 1, 4, (8, 8))


# -- lookup tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "space",
    [
        FBNetSpace(input_size=(32, 32)),
        ProxylessSpace(input_size=(32, 32)),
        SPOSSpace(input_size=(32, 32)),
        MnasNetSpace(input_size=(32, 32)),
        NB201Space(C=8, N=1),
    ],
    ids=["fbnet", "proxyless", "spos", "mnasnet", "nb201"],
)
def test_table_sum_equals_the_counters_on_whole_children(space: SearchSpace) -> None:
    shape = (3, 32, 32)
    flops, params = build_cost_table(space, "flops", shape), build_cost_table(space, "params", shape)
    rng = np.random.default_rng(1)
    for _ in range(3):
        arch = space.sample(rng)
        child = space.build(arch)
        assert flops.predict(arch) == count_flops(child, shape)
        assert params.predict(arch) == count_params(child)


def test_mnasnet_layer_counts_select_layers() -> None:
    space = MnasNetSpace(input_size=(32, 32))
    table = build_cost_table(space, "params", (3, 32, 32))
    a1 = space.named("mnasnet_a1")
    fewer = a1.with_value("stage4.layers", 3)
    assert table.predict(fewer) == count_params(space.build(fewer)) < table.predict(a1)


def test_table_round_trips_and_expectation_matches_predict(tmp_path: Path) -> None:
    space = ChainSpace()
    table = build_cost_table(space, "flops", SHAPE)
    table.save(tmp_path / "flops.json")
    loaded = load_cost_table(tmp_path / "flops.json", space, "flops")
    arch = Arch({"layer0": "conv5", "layer1": "skip", "layer2": "conv3", "layer3": "skip"})
    assert loaded.predict(arch) == table.predict(arch)
    one_hot = {name: torch.eye(3)[OPS.index(str(arch[name]))] for name in arch}
    assert float(loaded.expected(one_hot)) == pytest.approx(table.predict(arch))
    uniform = {name: torch.full((3,), 1 / 3, requires_grad=True) for name in arch}
    mean = loaded.expected(uniform)
    mean.backward()
    all_archs = list(space.enumerate())
    assert float(mean.detach()) == pytest.approx(np.mean([table.predict(a) for a in all_archs]))
    assert loaded.bounds() == (min(map(table.predict, all_archs)), max(map(table.predict, all_archs)))
    with pytest.raises(ConfigError, match="params"):
        load_cost_table(tmp_path / "flops.json", space, "params")
    with pytest.raises(ConfigError, match="does not fit"):
        loaded.check(FBNetSpace())


def test_latency_table_reuses_the_profiled_latency_table(tmp_path: Path) -> None:
    space = ChainSpace()
    latency = profile_space(space, (1, *SHAPE), warmup=1, repeats=2, calibrate=0)
    latency.save(tmp_path / "latency.json")
    table = load_cost_table(tmp_path / "latency.json", space, "latency_ms")
    assert isinstance(table, CostTable) and table.metric == "latency_ms"
    for arch in list(space.enumerate())[:5]:
        assert table.predict(arch) == pytest.approx(latency.predict(arch))


# -- constrained strategies ------------------------------------------------------------------------


class CountingFlops(Estimator):
    """Counts FLOPs of the built child; remembers every arch it was asked to evaluate."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.evaluated: list[tuple[Arch, int]] = []

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        flops = count_flops(self.space.build(arch), SHAPE)
        self.evaluated.append((arch, flops))
        return Result(metrics={"val_acc": float(flops), "flops": float(flops)})  # rewards the dearest


@pytest.mark.parametrize("strategy_cls", [ConstrainedEvolution, RejectionRandomSearch])
def test_constrained_search_never_evaluates_an_arch_over_budget(strategy_cls: type) -> None:
    space = ChainSpace()
    low, high = build_cost_table(space, "flops", SHAPE).bounds()
    budget = low + 0.3 * (high - low)
    strategy = strategy_cls(budget=CostBudget(metric="flops", max=budget), in_channels=1, input_size=(8, 8))
    estimator = CountingFlops(space)
    trials = drive(strategy, space, SingleMetric("val_acc"), estimator, 25, seed=0)
    assert len(estimator.evaluated) == len(trials) > 0
    assert all(flops <= budget for _, flops in estimator.evaluated)
    assert max(flops for _, flops in estimator.evaluated) > low  # it does search, not only the cheapest


def test_infeasible_budgets_are_clear_errors() -> None:
    space = ChainSpace()
    low, high = build_cost_table(space, "flops", SHAPE).bounds()
    below = CostBudget(metric="flops", max=low - 1)
    for strategy in (ConstrainedEvolution(budget=below, input_size=(8, 8), in_channels=1),):
        with pytest.raises(ConfigError, match="infeasible: the cheapest arch"):
            strategy.setup(space, SingleMetric(), seed=0)
    # Feasible for one arch only (all skips): random draws rarely hit it, so the cap stops it.
    tight = RejectionRandomSearch(
        budget=CostBudget(metric="flops", max=low), max_tries=3, in_channels=1, input_size=(8, 8)
    )
    tight.setup(space, SingleMetric(), seed=0)
    with pytest.raises(ConfigError, match="smallest flops seen was"):
        for _ in range(20):
            tight.ask()
    with pytest.raises(ConfigError, match="latency table"):
        RejectionRandomSearch(budget=CostBudget(metric="latency_ms", max=1.0)).setup(space, SingleMetric(), seed=0)


def test_without_a_budget_the_strategies_are_the_plain_ones() -> None:
    from nasforge.strategies.evolution import RegularizedEvolution
    from nasforge.testing import SyntheticEstimator, ToySpace

    space, objective = ToySpace(), SingleMetric("val_acc")
    plain = [t.arch for t in drive(RegularizedEvolution(), space, objective, SyntheticEstimator(), 20, seed=4)]
    constrained = [t.arch for t in drive(ConstrainedEvolution(), space, objective, SyntheticEstimator(), 20, seed=4)]
    assert plain == constrained


# -- the architecture generator --------------------------------------------------------------------


def test_generator_costs_track_the_target_budgets() -> None:
    torch.manual_seed(0)
    space = ChainSpace()
    table = build_cost_table(space, "flops", SHAPE)
    low, high = table.bounds()
    generator = ArchitectureGenerator(
        budget=CostBudget(metric="flops", max=high), epochs=20, in_channels=1, input_size=(8, 8)
    )
    generator.setup(space, SingleMetric(), seed=0)
    assert isinstance(generator, ArchParameters)
    estimator = SupernetEstimator(rule="spos", epochs=1, batch_size=32)
    ctx = Context(space=space, data=_toy_data(), seed=0, arch_parameters=generator)
    for _ in range(generator.epochs):
        estimator.update(ctx)
    assert generator.epoch == generator.epochs
    small, large = low + 0.25 * (high - low), low + 0.75 * (high - low)
    small_cost, large_cost = table.predict(generator.generate(small)), table.predict(generator.generate(large))
    assert small_cost < large_cost
    for target, cost in ((small, small_cost), (large, large_cost)):
        assert abs(cost - target) < 0.3 * (high - low)


def test_generator_runs_in_the_loop_and_leaves_the_supernet_unchanged(tmp_path: Path) -> None:
    space = ChainSpace()
    high = build_cost_table(space, "flops", SHAPE).bounds()[1]
    generator = ArchitectureGenerator(
        budget=CostBudget(metric="flops", max=high / 2), epochs=2, in_channels=1, input_size=(8, 8)
    )
    estimator = SupernetEstimator(rule="spos", epochs=1, batch_size=64)
    runner = Runner(
        space,
        generator,
        estimator,
        SingleMetric("val_acc"),
        budget=Budget(trials=10),
        run_dir=tmp_path,
        data=_toy_data(),
    )
    result = runner.run()
    assert len(result.trials) == generator.epochs + 1  # one per epoch plus the final arch, then None
    trainer = estimator._trainer
    assert trainer is not None and trainer.epochs_done == 1
    before = {k: v.clone() for k, v in trainer.supernet.state_dict().items()}
    estimator._arch_epoch(trainer, generator, estimator._tensors(runner.context)[1])
    after = trainer.supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_cost_table_that_is_not_json_is_a_config_error(tmp_path: Path) -> None:
    from nasforge.hardware.lut import load_cost_table

    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_cost_table(bad, NB201Space(C=4, N=1), "flops")
