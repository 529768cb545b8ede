"""Local search, simulated annealing, REINFORCE (independent and LSTM controllers), the Optuna
adapter (TPE, GP, QMC, NSGA-II/III) and Pareto-aware regularized evolution."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context
from nasforge.core.history import TrialLog
from nasforge.core.objective import Objective
from nasforge.core.space import SearchSpace
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Trial, TrialStatus
from nasforge.objectives.basic import Pareto, SingleMetric
from nasforge.objectives.pareto import hypervolume_2d
from nasforge.runner import run_search
from nasforge.strategies.controllers import IndependentController, LSTMController
from nasforge.strategies.pareto_evolution import crowding_distance
from nasforge.testing import SyntheticEstimator, ToySpace, drive, toy_score
from nasforge.testing.conformance import TinySpace

OPTIMUM = Arch({"op": "conv5x5", "width": 24, "residual": True, "depth": 3})
ACCURACY = SingleMetric("val_acc")
ACC_LATENCY = Pareto(metrics={"val_acc": "max", "latency_ms": "min"})
MINE = ["local_search", "annealing", "reinforce", "tpe", "optuna", "nsga2", "pareto_evolution"]


def make(name: str, **options: Any) -> Strategy:
    return registry.create("strategy", name, options)


def objective_of(name: str) -> Objective:
    return ACC_LATENCY if name in ("nsga2", "pareto_evolution") else ACCURACY


# -- finding the optimum ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("local_search", {}),
        ("annealing", {}),
        ("reinforce", {}),
        ("reinforce", {"controller": "lstm"}),
        ("tpe", {}),
        ("pareto_evolution", {}),
        ("nsga2", {"population_size": 10}),
    ],
)
def test_finds_toy_optimum(name: str, options: dict[str, Any]) -> None:
    """40 of 72 archs: random search finds the optimum in 56% of runs, these in at least 80%."""
    hits = 0
    for seed in range(5):
        trials = drive(make(name, **options), ToySpace(), ACCURACY, SyntheticEstimator(), 40, seed=seed)
        assert len({t.arch for t in trials}) == len(trials), "no arch is asked twice"
        hits += OPTIMUM in {t.arch for t in trials}
    assert hits >= 4


@pytest.mark.parametrize("name", ["local_search", "annealing", "reinforce", "tpe"])
def test_nb201_beats_random(name: str, shared_data: Path) -> None:
    """150 queries on the 12-epoch signal; mean 200-epoch CIFAR-10 test accuracy over seeds."""
    from nasforge.estimators.tabular_nb201 import NB201Table
    from nasforge.spaces.nb201 import NB201Space

    space, estimator = NB201Space(), NB201Table(data_dir=str(shared_data), devices=[])
    seeds = range(4) if name == "tpe" else range(10)

    def mean_test_acc(strategy: str) -> float:
        found = []
        for seed in seeds:
            trials = drive(make(strategy), space, ACCURACY, estimator, 150, seed=seed)
            found.append(max(trials, key=lambda t: t.value).metrics["test_acc"])
        return float(np.mean(found))

    ours, random = mean_test_acc(name), mean_test_acc("random")
    assert ours > random + 0.15, (ours, random)
    assert ours > 94.0


# -- multi-objective --------------------------------------------------------------------------


def _mean_hypervolume(name: str, options: dict[str, Any], budget: int, seeds: range) -> float:
    found = []
    for seed in seeds:
        trials = drive(make(name, **options), ToySpace(), ACC_LATENCY, SyntheticEstimator(), budget, seed=seed)
        found.append(hypervolume_2d([t.values for t in trials], reference=(49.0, -80.0)))
    return float(np.mean(found))


@pytest.mark.parametrize(("name", "options"), [("pareto_evolution", {}), ("nsga2", {"population_size": 10})])
def test_front_beats_random(name: str, options: dict[str, Any]) -> None:
    seeds = range(10)
    assert _mean_hypervolume(name, options, 25, seeds) > _mean_hypervolume("random", {}, 25, seeds) + 40


def test_pareto_evolution_front_on_nb201(shared_data: Path) -> None:
    from nasforge.estimators.tabular_nb201 import NB201Table
    from nasforge.spaces.nb201 import NB201Space

    objective = Pareto(metrics={"val_acc": "max", "latency_pixel3": "min"})
    estimator = NB201Table(data_dir=str(shared_data), devices=["pixel3"])
    volumes: dict[str, list[float]] = {"pareto_evolution": [], "random": []}
    for name, found in volumes.items():
        for seed in range(5):
            result = run_search(NB201Space(), make(name), estimator, objective, budget=150, seed=seed)
            front = result.pareto_front()
            assert front and all(t.ok for t in front)
            found.append(hypervolume_2d([t.values for t in front], reference=(0.0, -150.0)))
    assert np.mean(volumes["pareto_evolution"]) > np.mean(volumes["random"]) + 10


def test_crowding_distance() -> None:
    distance = crowding_distance([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0]])
    assert math.isinf(distance[0]) and math.isinf(distance[3])
    assert distance[1] == pytest.approx(3 / 4 + 3 / 4) and distance[2] == pytest.approx(3 / 4 + 3 / 4)
    assert np.isinf(crowding_distance([[1.0, 2.0], [2.0, 1.0]])).all()


# -- behaviour of each strategy -----------------------------------------------------------------


def test_local_search_climbs_the_neighbourhood() -> None:
    space = ToySpace()
    trials = drive(make("local_search", initial_samples=1), space, ACCURACY, SyntheticEstimator(), 9, seed=0)
    start, rest = trials[0].arch, [t.arch for t in trials[1:]]
    assert sorted(map(str, rest)) == sorted(map(str, space.neighbours(start)))  # all 8 neighbours, once
    nxt = drive(make("local_search", initial_samples=1), space, ACCURACY, SyntheticEstimator(), 10, seed=0)[9].arch
    best = max(trials[1:], key=lambda t: t.value).arch
    assert sum(nxt[k] != best[k] for k in best) == 1, "the climb moves to the best neighbour"


def test_annealing_temperature_is_geometric() -> None:
    strategy = make("annealing", initial_temperature=2.0, cooling=0.9)
    drive(strategy, ToySpace(), ACCURACY, SyntheticEstimator(), 10, seed=0)
    assert strategy.temperature == pytest.approx(2.0 * 0.9**10)  # type: ignore[attr-defined]


@pytest.mark.parametrize("controller", ["independent", "lstm"])
def test_reinforce_policy_learns(controller: str) -> None:
    strategy = make("reinforce", controller=controller)
    strategy.setup(ToySpace(), ACCURACY, seed=0)
    policy = strategy.controller  # type: ignore[attr-defined]
    with torch.no_grad():
        before = math.exp(float(policy.evaluate(OPTIMUM)[0]))
    drive(strategy, ToySpace(), ACCURACY, SyntheticEstimator(), 40, seed=0)
    policy = strategy.controller  # type: ignore[attr-defined]
    with torch.no_grad():
        after = math.exp(float(policy.evaluate(OPTIMUM)[0]))
    assert after > 3 * before, (before, after)
    if controller == "independent":
        probs = dict(zip(ToySpace().choices()["op"].candidates, policy.probabilities()[0], strict=True))
        assert probs["conv5x5"] == max(probs.values()) and probs["conv5x5"] > 0.4


def test_enas_preset_updates_the_controller_once_every_aggregate_samples() -> None:
    from nasforge.spaces.nb201 import NB201Space

    assert [(s.aggregate, s.lr) for s in (make("reinforce"), make("reinforce", controller="lstm"))] == [(1, 0.1), (1, 0.01)]
    enas = make("reinforce", controller="enas")
    assert (enas.aggregate, enas.lr, enas.betas, enas.eps, enas.baseline_decay) == (20, 3.5e-4, (0.0, 0.999), 1e-3, 0.99)  # type: ignore[attr-defined]

    space = NB201Space()  # 15,625 archs: 20 samples hold no repeat, so every sample is a told trial
    strategy = make("reinforce", controller="enas", aggregate=4)
    strategy.setup(space, ACCURACY, seed=0)
    policy = strategy.controller  # type: ignore[attr-defined]

    def weights() -> list[torch.Tensor]:
        return [p.detach().clone() for p in policy.parameters()]

    changed_after = []
    for number in range(1, 13):
        before = weights()
        arch = strategy.ask()
        assert arch is not None
        score = sum(op == "nor_conv_3x3" for op in arch.values()) + number / 100
        strategy.tell(Trial(number=number, arch=arch, seed=number, metrics={"val_acc": score}, values=(score,)))
        if any(not torch.equal(a, b) for a, b in zip(before, weights(), strict=True)):
            changed_after.append(number)
    assert changed_after == [4, 8, 12]


def test_controllers_api() -> None:
    choices = list(ToySpace().choices().values())
    for policy in (
        IndependentController(choices, rng=np.random.default_rng(0)),
        LSTMController(choices, rng=np.random.default_rng(0)),
    ):
        draw = policy.sample(np.random.default_rng(1))
        ToySpace().validate(draw.arch)
        assert draw.log_prob.requires_grad and draw.entropy.item() > 0
        assert policy.to_indices(draw.arch) == list(draw.indices)
        log_prob, _ = policy.evaluate(draw.arch)
        assert log_prob.item() == pytest.approx(draw.log_prob.item())
        # the log-probabilities of all 72 archs sum to one
        total = sum(math.exp(policy.evaluate(a)[0].item()) for a in ToySpace().enumerate())
        assert total == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("name", ["local_search", "annealing", "reinforce"])
def test_scalar_strategies_refuse_several_objectives(name: str) -> None:
    with pytest.raises(ConfigError, match="multi-objective"):
        make(name).setup(ToySpace(), ACC_LATENCY, seed=0)


# -- ending cleanly ---------------------------------------------------------------------------


class OnlyWidth24(ToySpace):
    """ToySpace restricted to width 24: 18 of 72 archs are valid."""

    def is_valid(self, arch: Arch) -> bool:
        return arch["width"] == 24


@pytest.mark.parametrize("name", MINE)
@pytest.mark.parametrize("space", [TinySpace(), OnlyWidth24()], ids=["tiny", "constrained"])
def test_exhausts_the_space_then_stops(name: str, space: SearchSpace) -> None:
    size = sum(1 for _ in space.enumerate())
    score = (
        (lambda a: toy_score(Arch({**a, "residual": False, "depth": 1}))) if isinstance(space, TinySpace) else toy_score
    )
    trials = drive(make(name), space, objective_of(name), SyntheticEstimator(score), 3 * size, seed=0)
    assert len(trials) == size and len({t.arch for t in trials}) == size
    for trial in trials:
        space.validate(trial.arch)


# -- resuming ---------------------------------------------------------------------------------

LATENCY_CAP = SingleMetric("val_acc", constraints=[{"metric": "latency_ms", "max": 20.0}])


def _trial(number: int, arch: Arch, objective: Objective) -> Trial:
    """The toy trial of ``arch``; pooling archs of depth 1 fail."""
    if arch["op"] == "pool" and arch["depth"] == 1:
        return Trial(number=number, arch=arch, seed=number, status=TrialStatus.FAILED, error="boom")
    metrics = SyntheticEstimator().estimate(arch, Context(space=ToySpace(), seed=number)).metrics
    return Trial(
        number=number,
        arch=arch,
        seed=number,
        metrics=dict(metrics),
        values=objective.score(metrics),
        feasible=objective.feasible(metrics),
    )


def _run(
    factory: Callable[[], Strategy], objective: Objective, n: int, *, stop_at: int | None = None, pending: int = 1
) -> tuple[list[Arch], Strategy]:
    """Ask up to ``pending`` archs ahead of telling them. At ``stop_at`` asks, pickle the state
    and carry on with a fresh strategy restored from it (and bound to the same history, archs in
    flight included, as the runner's)."""
    space = ToySpace()
    history = TrialLog()
    strategy = factory()
    strategy.history = history
    strategy.setup(space, objective, seed=5)
    asked: list[Arch] = []
    queue: list[Arch] = []
    while len(asked) < n or queue:
        if len(queue) < pending and len(asked) < n:
            if len(asked) == stop_at:
                state = pickle.loads(pickle.dumps(strategy.state_dict()))
                strategy = factory()
                strategy.history = history
                strategy.setup(space, objective, seed=5)
                strategy.load_state_dict(state)
            arch = strategy.ask()
            if arch is not None:
                history.record_ask(arch)
                asked.append(arch)
                queue.append(arch)
                continue
        if not queue:
            break
        trial = _trial(len(asked) - len(queue), queue.pop(0), objective)
        history.record_tell(trial)
        strategy.tell(trial)
    return asked, strategy


RESUMABLE = [
    ("optuna", {"sampler": "tpe"}),
    ("optuna", {"sampler": "random"}),
    ("optuna", {"sampler": "qmc", "sampler_options": {"scramble": True}}),
    ("optuna", {"sampler": "nsgaii", "sampler_options": {"population_size": 4}}),
    ("optuna", {"sampler": "nsgaiii", "sampler_options": {"population_size": 4}}),
    ("optuna", {"sampler": "gp", "sampler_options": {"n_startup_trials": 3}, "max_retries": 1}),
    ("reinforce", {"controller": "lstm"}),
    ("reinforce", {"controller": "enas", "aggregate": 5}),  # resumed with a part-filled batch
    ("annealing", {}),
    ("local_search", {}),
    ("pareto_evolution", {}),
]


@pytest.mark.parametrize(
    ("name", "options"), RESUMABLE, ids=[f"{n}-{o.get('sampler', o.get('controller', ''))}" for n, o in RESUMABLE]
)
@pytest.mark.parametrize("pending", [1, 2])
def test_resume_is_identical(name: str, options: dict[str, Any], pending: int) -> None:
    """Stopping, pickling the state and restoring it changes nothing, even with a trial in flight,
    with failed trials and with infeasible ones (a latency constraint)."""
    n = 10 if options.get("sampler") == "gp" else 24  # GP refits at every ask: slow
    reference, strategy = _run(lambda: make(name, **options), LATENCY_CAP, n, pending=pending)
    assert len(reference) == n and len(set(reference)) == n, "an arch was asked twice"
    for stop_at in (1, 7):
        resumed, restored = _run(lambda: make(name, **options), LATENCY_CAP, n, stop_at=stop_at, pending=pending)
        assert resumed == reference, f"resuming after {stop_at} asks changed the archs asked"
        if name == "optuna":  # the studies match too, duplicates told in between included
            assert _study_log(restored) == _study_log(strategy)


def _study_log(strategy: Strategy) -> list[tuple[Any, ...]]:
    return [(t.params, t.state, t.values, t.constraints) for t in strategy._study.trials]  # type: ignore[attr-defined]


# -- the Optuna adapter -----------------------------------------------------------------------


def test_optuna_tells_failures_and_constraints() -> None:
    import optuna

    asked, strategy = _run(lambda: make("tpe"), LATENCY_CAP, 30)
    assert any(a["op"] == "pool" and a["depth"] == 1 for a in asked)
    study = strategy._study  # type: ignore[attr-defined]
    for t in study.trials:
        failing = t.params["op"] == "pool" and t.params["depth"] == 1
        assert (t.state == optuna.trial.TrialState.FAIL) == failing
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert completed and all(len(t.constraints) == 1 for t in completed)
    for t in completed:
        latency = toy_score(Arch(t.params))["latency_ms"]
        assert next(iter(t.constraints.values())) == pytest.approx(latency - 20.0)


def test_optuna_multi_objective_directions() -> None:
    strategy = make("nsga2")
    strategy.setup(ToySpace(), ACC_LATENCY, seed=0)
    assert len(strategy._study.directions) == 2  # type: ignore[attr-defined]
    assert "multi-objective" in registry.get("strategy", "nsga2").tags


def test_optuna_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="n_startup"):
        make("optuna", sampler="tpe", sampler_options={"n_startup": 3})
    with pytest.raises(ConfigError, match="seed"):
        make("optuna", sampler="random", sampler_options={"seed": 3})
    with pytest.raises(ConfigError, match="sampler"):
        make("optuna", sampler="smac")


def test_optuna_warm_start_from_told_trials() -> None:
    """Trials told without being asked (e.g. from an earlier run) join the study."""
    strategy = make("tpe", n_startup_trials=3)
    history = TrialLog()
    strategy.history = history
    strategy.setup(ToySpace(), ACCURACY, seed=0)
    archs = list(ToySpace().enumerate())[:5]
    for number, arch in enumerate(archs):
        trial = _trial(number, arch, ACCURACY)
        history.record_tell(trial)
        strategy.tell(trial)
    assert len(strategy._study.trials) == 5  # type: ignore[attr-defined]
    assert strategy.ask() not in archs


def test_optuna_logging_is_quiet_during_calls_and_left_as_the_user_set_it() -> None:
    import logging

    import optuna

    logger = logging.getLogger("optuna")
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # a user who wants to see Optuna's own messages
    try:
        asked, strategy = _run(lambda: make("tpe"), LATENCY_CAP, 6, stop_at=3)  # setup, ask, tell, load_state_dict
        assert len(asked) == 6 and logger.level == logging.DEBUG
        assert not [r for r in records if r.levelno < logging.WARNING], "Optuna's INFO lines leaked into a search"
        optuna.create_study()  # outside nasforge's calls the user's level rules
        assert any(r.levelno == logging.INFO for r in records)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
