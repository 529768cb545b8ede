"""Encodings, predictors, the predictor estimator and the BANANAS strategy."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context
from nasforge.core.history import TrialLog
from nasforge.core.strategy import Strategy
from nasforge.objectives.basic import Pareto, SingleMetric
from nasforge.predictors.encodings import get_encoder, is_cell_space
from nasforge.spaces.nb201 import NB201Space
from nasforge.testing import SyntheticEstimator, ToySpace, drive, toy_score

CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


# -- encodings ---------------------------------------------------------------------------------


def test_encoding_lengths_on_nb201() -> None:
    space = NB201Space()
    archs = [space.sample(np.random.default_rng(i)) for i in range(7)]
    for name, size in [("onehot", 30), ("adjacency", 24), ("path", 4 + 16 + 64)]:
        encoder = get_encoder(name, space)
        assert encoder.size == size
        assert encoder(archs[0]).shape == (size,)
        matrix = encoder(archs)
        assert matrix.shape == (7, size)
        assert np.array_equal(matrix[3], encoder(archs[3]))
    assert is_cell_space(space)
    assert get_encoder("auto", space).size == 84


def test_path_encoding_of_a_hand_worked_cell() -> None:
    """Paths 0->3 (skip), 0->1->3 (conv3, conv1), 0->2->3 (conv3, pool); 0->1->2->3 crosses none."""
    space = NB201Space()
    encoder = get_encoder("path", space)
    vector = encoder(space.parse(CELL))
    present = {encoder.describe(int(i)): float(vector[i]) for i in np.flatnonzero(vector)}
    assert present == {
        "skip_connect": 1.0,
        "nor_conv_3x3 > nor_conv_1x1": 1.0,
        "nor_conv_3x3 > avg_pool_3x3": 1.0,
    }
    # ops skip=0, conv1=1, conv3=2, pool=3; a length-2 slot is 4 + first + 4 * second
    assert vector[4 + 2 + 4 * 1] == 1.0
    # two paths carrying the same sequence count twice; an all-none cell has no path
    twice = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    assert encoder(twice)[4 + 2 + 4 * 2] == 2.0
    empty = space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert not encoder(empty).any()


def test_adjacency_and_onehot_of_a_cell() -> None:
    space = NB201Space()
    arch = space.parse(CELL)
    adjacency = get_encoder("adjacency", space)(arch)
    assert adjacency.sum() == 5  # six edges, one of them none
    onehot = get_encoder("onehot", space)(arch)
    assert onehot.sum() == 6 and onehot.reshape(6, 5)[2, 0] == 1.0  # edge 2<-1 is none


def test_cell_encodings_refuse_other_spaces() -> None:
    space = ToySpace()
    assert not is_cell_space(space)
    for name in ("path", "adjacency"):
        with pytest.raises(ConfigError, match="not a cell space"):
            get_encoder(name, space)
    assert get_encoder("auto", space).size == 3 + 4 + 2 + 3
    with pytest.raises(ConfigError, match="unknown encoding"):
        get_encoder("graph", space)


# -- predictors --------------------------------------------------------------------------------


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary features; a linear part plus one interaction, little noise."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, size=(n, 16)).astype(np.float32)
    weights = np.linspace(-2, 2, 16)
    y = X @ weights + 3.0 * X[:, 0] * X[:, 1] + rng.normal(0, 0.2, n)
    return X, y


@pytest.mark.parametrize("name", registry.names("predictor"))
def test_predictor_learns_a_synthetic_function(name: str) -> None:
    X, y = _synthetic(250, 0)
    model = registry.create("predictor", name, {"seed": 1}).fit(X[:150], y[:150])
    mean = model.predict(X[150:])
    assert mean.shape == (100,)
    assert np.corrcoef(mean, y[150:])[0, 1] > 0.85
    if model.has_uncertainty:
        mean2, std = model.predict_dist(X[150:])
        assert np.allclose(mean, mean2) and std.shape == (100,) and (std >= 0).all()
    else:
        with pytest.raises(NotImplementedError):
            model.predict_dist(X[150:])
    again = registry.create("predictor", name, {"seed": 1}).fit(X[:150], y[:150]).predict(X[150:])
    assert np.allclose(mean, again), "same seed, same data: same predictions"


def test_predictor_estimator_from_a_file_and_from_a_teacher(tmp_path: Path) -> None:
    space = ToySpace()
    archs = list(space.enumerate())
    rng = np.random.default_rng(0)
    known = [archs[i] for i in rng.permutation(len(archs))[:40]]
    path = tmp_path / "measured.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "val_acc"])
        writer.writerows([str(a), toy_score(a)["val_acc"]] for a in known)
    ctx = Context(space=space)
    truth = np.array([toy_score(a)["val_acc"] for a in archs])

    from_file = registry.create("estimator", "predictor", {"data": str(path), "predictor": "gbt"})
    results = [from_file.estimate(a, ctx) for a in archs]
    assert results[archs.index(known[0])].extras["source"] == "measured"
    predicted = np.array([r.metrics["val_acc"] for r in results])
    assert np.corrcoef(predicted, truth)[0, 1] > 0.9

    records = [{"arch": str(a), "val_acc": toy_score(a)["val_acc"]} for a in known]
    (tmp_path / "measured.json").write_text(json.dumps(records))
    from_json = registry.create("estimator", "predictor", {"data": str(tmp_path / "measured.json")})
    assert from_json.estimate(archs[0], ctx).metrics["val_acc"] == pytest.approx(predicted[0])

    taught = registry.create(
        "estimator", "predictor", {"teacher": SyntheticEstimator(), "warmup": 30, "predictor": "mlp_ensemble"}
    )
    sources = [taught.estimate(a, ctx).extras["source"] for a in archs[:40]]
    assert sources == ["teacher"] * 30 + ["predicted"] * 10
    state = pickle.loads(pickle.dumps(taught.state_dict()))
    restored = registry.create(
        "estimator", "predictor", {"teacher": SyntheticEstimator(), "warmup": 30, "predictor": "mlp_ensemble"}
    )
    restored.load_state_dict(state)
    after = restored.estimate(archs[50], ctx)
    assert after.metrics == taught.estimate(archs[50], ctx).metrics
    assert after.extras["val_acc_std"] >= 0


def test_predictor_estimator_defaults_and_errors(tmp_path: Path) -> None:
    default = registry.create("estimator", "predictor", {})  # no data: it learns from a scratch-training teacher
    assert type(default.teacher).__name__ == "ScratchTraining" and default.warmup == 20
    with pytest.raises(ConfigError):
        registry.create("estimator", "predictor", {"data": "x.csv", "predictor": "nope"})
    missing = registry.create("estimator", "predictor", {"data": str(tmp_path / "absent.csv")})
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        missing.estimate(Arch({"op": "pool"}), Context(space=ToySpace()))


# -- BANANAS -----------------------------------------------------------------------------------


def _bananas(**options: object) -> Strategy:
    """BANANAS with a smaller candidate pool and shorter training, for speed."""
    small = {"candidates": 100, "predictor_options": {"steps": 50, "hidden": 16}}
    return registry.create("strategy", "bananas", {**small, **options})


def test_bananas_finds_the_toy_optimum_and_never_repeats() -> None:
    space, objective = ToySpace(), SingleMetric("val_acc")
    best = max(toy_score(a)["val_acc"] for a in space.enumerate())
    for seed in range(3):
        trials = drive(_bananas(), space, objective, SyntheticEstimator(), 30, seed=seed)
        assert max(t.value for t in trials) == best
    every = drive(_bananas(), space, objective, SyntheticEstimator(), 100, seed=0)
    assert len(every) == 72 and len({t.arch for t in every}) == 72  # the space, once each, then None


@pytest.mark.parametrize("acquisition", ["its", "ucb", "ei", "mean"])
def test_bananas_is_deterministic_and_resumes_exactly(acquisition: str) -> None:
    space, objective, estimator = ToySpace(), SingleMetric("val_acc"), SyntheticEstimator()
    options = {"acquisition": acquisition, "initial": 5, "batch": 3}
    reference = drive(_bananas(**options), space, objective, estimator, 30, seed=4)
    assert [t.arch for t in drive(_bananas(**options), space, objective, estimator, 30, seed=4)] == [
        t.arch for t in reference
    ]
    first = _bananas(**options)
    head = drive(first, space, objective, estimator, 13, seed=4)  # stops with a batch half asked
    state = json.loads(json.dumps(first.state_dict()))
    second = _bananas(**options)
    history = TrialLog(head)  # the runner rebuilds its history from the store
    second.history = history
    second.setup(space, objective, seed=4)
    second.load_state_dict(state)
    tail = []
    for trial in reference[13:]:
        arch = second.ask()
        assert arch is not None
        tail.append(arch)
        history.record_ask(arch)
        history.record_tell(trial)
        second.tell(trial)
    assert tail == [t.arch for t in reference[13:]]


def test_bananas_with_other_predictors_and_encodings() -> None:
    space, objective = NB201Space(), SingleMetric("val_acc")

    def score(arch: Arch) -> dict[str, float]:  # more 3x3 convs is better
        return {"val_acc": float(sum(v == "nor_conv_3x3" for v in arch.values()))}

    for options in (
        {"predictor": "gbt", "encoding": "onehot", "predictor_options": {}},
        {"predictor": "random_forest", "encoding": "adjacency", "predictor_options": {"trees": 30}},
    ):
        trials = drive(_bananas(**options), space, objective, SyntheticEstimator(score), 40, seed=0)
        assert len({t.arch for t in trials}) == 40
        assert max(t.value for t in trials) >= 5


def test_bananas_refuses_several_objectives() -> None:
    strategy = _bananas()
    with pytest.raises(ValueError, match="one objective"):
        strategy.setup(ToySpace(), Pareto(metrics={"val_acc": "max", "latency_ms": "min"}), seed=0)


def test_bananas_beats_random_search_on_nb201(shared_data: Path) -> None:
    from nasforge.runner import run_search

    space = NB201Space()
    estimator = registry.create("estimator", "nb201_table", {"dataset": "cifar10", "devices": []})
    found: dict[str, list[float]] = {"bananas": [], "random": []}
    for name, runs in found.items():
        for seed in range(3):
            strategy = registry.create("strategy", name, {})
            result = run_search(space, strategy, estimator, SingleMetric("val_acc"), budget=100, seed=seed)
            runs.append(result.best()[0].metrics["test_acc"])
    assert np.mean(found["bananas"]) > np.mean(found["random"])
    assert np.mean(found["bananas"]) > 93.9
