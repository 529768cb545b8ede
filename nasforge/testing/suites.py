"""Conformance suites for every registry kind: ``check_space(name)``, ``check_estimator(name)``, ...

``tests/test_conformance.py`` runs the check of each kind over every registered name, so a new
component is tested by being registered; plugin authors call the same functions on their own
parts (``check("space", "my_space")``). Each check builds the component through the registry
with *tiny* settings: 1x8x8 inputs, 10 classes, the bundled ``digits`` data cut to 160 images,
one epoch.

**Tiny settings.** A component that needs options to run at all (a data file, an inner
component, a user factory), or that is too slow at its defaults, declares them as a class
attribute next to ``example_options``::

    conformance_options: ClassVar[Mapping[str, Any]] = {"epochs": 1, "batch_size": 16}

It may instead be a function of a scratch folder returning the options, for a component that
needs a file written first (a latency table). Estimators may also declare
``conformance_space`` (the ``{type, ...}`` spec of the space to run on; default a one-cell
NB201 space) and ``conformance_strategy`` (a strategy spec whose architecture parameters the
estimator trains, for the ``dnas`` estimator). Without ``conformance_options`` the check uses
``example_options``, then no options at all.

A check that cannot run here (the component's data files are absent) raises
:class:`unittest.SkipTest` with the reason, which pytest reports as a skip.
"""

from __future__ import annotations

import contextlib
import functools
import math
import pickle
import tempfile
import unittest
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nasforge.core import component, registry
from nasforge.core.arch import Arch, Choice
from nasforge.core.differentiable import ArchParameters
from nasforge.core.errors import ConfigError, DataNotFoundError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.objective import Objective
from nasforge.core.space import SearchSpace
from nasforge.core.trial import Result
from nasforge.tasks.criteria import Criterion
from nasforge.testing.common import CONTEXT, make_space, same_state

__all__ = [
    "CONTEXT",
    "DEFAULT_SPACE",
    "CHECKS",
    "check",
    "check_space",
    "check_estimator",
    "check_objective",
    "check_predictor",
    "check_dataset",
    "check_criterion",
    "check_rule",
    "check_cost_model",
    "check_encoding",
    "check_step",
    "conformance_options",
    "make_space",
    "same_state",
    "tiny_data",
    "tiny_datasets",
    "tiny_model",
]

#: The space estimators run on unless they declare ``conformance_space``: NB201 with one cell per stage.
DEFAULT_SPACE: dict[str, Any] = {"type": "nb201", "C": 4, "N": 1}
_BATCH = 2


def _target(kind: str, name: str) -> Any:
    return registry.get(kind, name).target


def conformance_options(kind: str, name: str, scratch: Path | None = None) -> dict[str, Any]:
    """The options the checks build ``kind``/``name`` with: its declared ``conformance_options``
    (called with ``scratch``, a folder it may write to, when it is a function), else its
    ``example_options``, else none (:mod:`nasforge.core.component`)."""
    return component.conformance_options(_target(kind, name), Path(scratch or tempfile.mkdtemp(prefix="nasforge-conformance-")))


@contextlib.contextmanager
def _skip_missing_data(kind: str, name: str) -> Iterator[None]:
    """Turn a component's missing data files into a skip naming what is missing."""
    try:
        yield
    except DataNotFoundError as exc:
        raise unittest.SkipTest(f"{kind} {name!r} needs data that is not here: {exc}") from None


def _create(kind: str, name: str, options: Mapping[str, Any] | None, scratch: Path, context: Mapping[str, Any]) -> Any:
    opts = conformance_options(kind, name, scratch) if options is None else dict(options)
    with _skip_missing_data(kind, name):
        return registry.create(kind, name, opts, context=context, where=f"{kind} {name!r} (conformance)")


def _inputs(seed: int = 0) -> torch.Tensor:
    return torch.randn(_BATCH, CONTEXT["in_channels"], *CONTEXT["input_size"], generator=torch.Generator().manual_seed(seed))


def _has_supernet(space: SearchSpace) -> bool:
    from nasforge.core.capabilities import Capability, offers

    return offers(space, Capability.SUPERNET)


def _builds_networks(space: SearchSpace) -> bool:
    """False for spaces of values with no network (``params``), which say so by a class
    attribute ``builds_network = False``."""
    return type(space).builds_network


# -- spaces ------------------------------------------------------------------------------------------


def check_space(name: str, options: Mapping[str, Any] | None = None, *, samples: int = 3) -> None:
    """Raise AssertionError unless space ``name`` honours the space contract.

    Checks: ``choices()`` is a non-empty mapping of :class:`Choice` keyed by their names; sampled
    archs are valid and survive ``format``/``parse`` and ``str``/``Arch.parse``; ``enumerate``
    and ``neighbours`` give valid archs; a built network maps a batch of 1x8x8 inputs to
    ``(batch, num_classes)``; and when the space has a supernet, ``export(arch)`` gives the
    same outputs as the supernet on that path, and loads into ``build(arch)`` where their
    parameters match.
    """
    with tempfile.TemporaryDirectory(prefix="nasforge-conformance-") as scratch:
        space = _create("space", name, options, Path(scratch), CONTEXT)
        assert isinstance(space, SearchSpace), f"space {name!r} built a {type(space).__name__}, not a SearchSpace"
        choices = space.choices()
        assert choices, f"space {name!r} has no choices"
        for key, choice in choices.items():
            assert isinstance(choice, Choice) and choice.name == key, f"space {name!r}: choice {key!r} is misnamed or not a Choice"
            assert len(choice) >= 1, f"space {name!r}: choice {key!r} has no candidates"
        rng = np.random.default_rng(0)
        archs = [space.sample(rng) for _ in range(samples)]
        for arch in archs:
            space.validate(arch)
            text = space.format(arch)
            parsed = space.validate(space.parse(text))
            # a notation may be canonical (OFA leaves out blocks below a stage's depth): it must be stable
            assert space.format(parsed) == text, f"space {name!r}: format(parse(format(arch))) != format(arch) for {arch}"
            assert Arch.parse(str(arch)) == arch, f"space {name!r}: Arch.parse(str(arch)) != arch"
            for neighbour in space.neighbours(arch)[:5]:
                space.validate(neighbour)
        first = next(iter(space.enumerate()), None)
        assert first is not None, f"space {name!r} enumerates no arch"
        space.validate(first)
        if not _builds_networks(space):
            return
        x = _inputs()
        torch.manual_seed(0)
        for arch in archs[:2]:
            network = space.build(arch).eval()
            assert isinstance(network, nn.Module), f"space {name!r}: build gave a {type(network).__name__}"
            with torch.no_grad():
                out = network(x)
            out = out[0] if isinstance(out, (tuple, list)) else out  # auxiliary heads
            assert tuple(out.shape) == (_BATCH, CONTEXT["num_classes"]), f"space {name!r}: output {tuple(out.shape)}"
        if _has_supernet(space):
            _check_supernet(name, space, archs[:2], x)


def _check_supernet(name: str, space: SearchSpace, archs: list[Arch], x: torch.Tensor) -> None:
    supernet = space.supernet().eval()  # type: ignore[attr-defined]
    for arch in archs:
        supernet.activate(arch)
        with torch.no_grad():
            expected = supernet(x)
            child = supernet.export(arch).eval()
            got = child(x)
        expected = expected[0] if isinstance(expected, (tuple, list)) else expected
        got = got[0] if isinstance(got, (tuple, list)) else got
        assert torch.allclose(got, expected, atol=1e-5), f"space {name!r}: the exported child differs from the supernet path"
        built = space.build(arch).eval()
        child_state = child.state_dict()
        if {k: tuple(v.shape) for k, v in built.state_dict().items()} == {k: tuple(v.shape) for k, v in child_state.items()}:
            built.load_state_dict(child_state)
            with torch.no_grad():
                again = built(x)
            again = again[0] if isinstance(again, (tuple, list)) else again
            assert torch.allclose(again, expected, atol=1e-5), (
                f"space {name!r}: build(arch) with the supernet's weights differs from the supernet"
            )


# -- estimators --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def tiny_data() -> Any:
    """``digits`` cut to 160 training images (128 train / 32 valid) and 40 test images."""
    return registry.create("dataset", "digits", {"train_limit": 160, "test_limit": 40}).load(seed=0)


def _finite_metrics(where: str, result: Any) -> None:
    assert isinstance(result, Result), f"{where}: estimate returned a {type(result).__name__}, not a Result"
    assert result.metrics, f"{where}: no metrics"
    for key, value in result.metrics.items():
        assert isinstance(key, str) and isinstance(value, (int, float)), f"{where}: metric {key!r} = {value!r}"


def check_estimator(name: str, options: Mapping[str, Any] | None = None, *, trials: int = 2) -> None:
    """Raise AssertionError unless estimator ``name`` runs a tiny search and resumes.

    A tiny run: ``update`` then ``estimate`` for ``trials`` archs (the strategy's, when the
    estimator declares ``conformance_strategy``) on ``digits`` at 1x8x8; every result has
    numeric metrics. Then ``state_dict`` survives pickling into a fresh estimator, which
    gives the same state back and estimates an arch with the same metric names.
    """
    target = _target("estimator", name)
    with tempfile.TemporaryDirectory(prefix="nasforge-conformance-") as scratch:
        space_spec = target.conformance_space or DEFAULT_SPACE
        with _skip_missing_data("estimator", name):
            space = make_space(space_spec)
        opts = conformance_options("estimator", name, Path(scratch)) if options is None else dict(options)
        estimator = _create("estimator", name, opts, Path(scratch), {"space": space})
        assert isinstance(estimator, Estimator), f"estimator {name!r} built a {type(estimator).__name__}"
        strategy = None
        strategy_spec = target.conformance_strategy
        if strategy_spec is not None:
            from nasforge.objectives.basic import SingleMetric

            strategy = registry.create_inner("strategy", strategy_spec, where="conformance strategy")
            strategy.setup(space, SingleMetric("val_acc"), seed=0)
        ctx = Context(
            space=space,
            data=tiny_data(),
            seed=0,
            run_dir=Path(scratch) / "run",
            arch_parameters=strategy if isinstance(strategy, ArchParameters) else None,
        )
        rng = np.random.default_rng(0)
        last: Result | None = None
        arch = None
        torch.manual_seed(0)
        with _skip_missing_data("estimator", name):
            for number in range(trials):
                asked = strategy.ask() if strategy is not None else space.sample(rng)
                arch = asked if asked is not None else space.sample(rng)
                estimator.update(ctx)
                last = estimator.estimate(arch, replace(ctx, seed=number))
                _finite_metrics(f"estimator {name!r}", last)
        assert last is not None and arch is not None
        state = pickle.loads(pickle.dumps(estimator.state_dict()))
        fresh = _create("estimator", name, opts, Path(scratch), {"space": space})
        fresh.load_state_dict(state)
        assert same_state(fresh.state_dict(), state), f"estimator {name!r}: load_state_dict(state_dict()) did not restore the state"
        expected = estimator.estimate(arch, replace(ctx, seed=trials - 1))
        again = fresh.estimate(arch, replace(ctx, seed=trials - 1))
        _finite_metrics(f"estimator {name!r} (resumed)", again)
        assert set(again.metrics) == set(expected.metrics), (
            f"estimator {name!r}: resumed from its state_dict it measures {sorted(again.metrics)}, "
            f"the uninterrupted one {sorted(expected.metrics)}"
        )
        differ = [k for k in expected.metrics if not math.isclose(again.metrics[k], expected.metrics[k], rel_tol=1e-4, abs_tol=1e-6)]
        assert not differ, f"estimator {name!r}: resumed from its state_dict it measures other {', '.join(differ)}"


# -- objectives, predictors, datasets ----------------------------------------------------------------

_METRICS = {"val_acc": 0.9, "val_loss": 0.3, "params": 1200.0, "flops": 5e4, "macs": 2.5e4, "latency_ms": 1.5}


def check_objective(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Raise AssertionError unless objective ``name`` scores metrics consistently.

    Checks: ``names`` is a non-empty tuple of strings; ``score`` gives ``n_objectives`` finite
    floats; ``feasible`` a bool; a better ``val_acc`` never scores lower on any objective that
    reads it alone; the objective survives pickling.
    """
    with tempfile.TemporaryDirectory(prefix="nasforge-conformance-") as scratch:
        objective = _create("objective", name, options, Path(scratch), {})
    assert isinstance(objective, Objective), f"objective {name!r} built a {type(objective).__name__}"
    labels = objective.names
    assert labels and all(isinstance(label, str) for label in labels), f"objective {name!r}: names {labels!r}"
    values = objective.score(_METRICS)
    assert len(values) == objective.n_objectives == len(labels), f"objective {name!r}: {len(values)} scores for {labels}"
    assert all(isinstance(v, float) and math.isfinite(v) for v in values), f"objective {name!r}: scores {values}"
    assert isinstance(objective.feasible(_METRICS), bool), f"objective {name!r}: feasible() is not a bool"
    copy = pickle.loads(pickle.dumps(objective))
    assert copy.score(_METRICS) == values, f"objective {name!r}: a pickled copy scores differently"


def check_predictor(name: str, options: Mapping[str, Any] | None = None, *, n: int = 24, d: int = 6) -> None:
    """Raise AssertionError unless predictor ``name`` fits and predicts with the right shapes.

    ``fit(X (n, d), y (n,))`` returns the predictor; ``predict(X (m, d))`` gives ``(m,)`` finite
    values; one with ``has_uncertainty`` gives a mean and a non-negative std of ``(m,)`` each.
    """
    from nasforge.predictors.models import Predictor

    with tempfile.TemporaryDirectory(prefix="nasforge-conformance-") as scratch:
        predictor = _create("predictor", name, options, Path(scratch), {})
    assert isinstance(predictor, Predictor), f"predictor {name!r} built a {type(predictor).__name__}"
    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, size=(n, d)).astype(np.float64)
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    assert predictor.fit(X, y) is predictor, f"predictor {name!r}: fit must return self"
    test = rng.integers(0, 2, size=(5, d)).astype(np.float64)
    mean = np.asarray(predictor.predict(test))
    assert mean.shape == (5,) and np.isfinite(mean).all(), f"predictor {name!r}: predict gave shape {mean.shape}"
    if predictor.has_uncertainty:
        mu, std = (np.asarray(a) for a in predictor.predict_dist(test))
        assert mu.shape == std.shape == (5,), f"predictor {name!r}: predict_dist gave {mu.shape}, {std.shape}"
        assert (std >= 0).all() and np.isfinite(std).all(), f"predictor {name!r}: negative or non-finite std"


def tiny_datasets() -> tuple[TensorDataset, TensorDataset]:
    """A user factory for the ``custom`` dataset: 40 train / 12 test random 1x8x8 images, 3 classes."""
    generator = torch.Generator().manual_seed(0)
    make = lambda n: TensorDataset(torch.rand(n, 1, 8, 8, generator=generator), torch.arange(n) % 3)  # noqa: E731
    return make(40), make(12)


def tiny_model(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """A user factory for model-based spaces (``model``, ``hpo``): conv, pool, linear."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )  # fmt: skip


def check_dataset(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Raise AssertionError unless dataset ``name`` loads consistent splits (skip when its files
    are absent).

    Checks: train/valid/test are non-empty ``(image, label)`` datasets whose image shape is
    ``(in_channels, *input_size)`` and labels lie in ``[0, num_classes)``; the same seed gives
    the same split.
    """
    from nasforge.tasks.splits import DatasetSource

    with tempfile.TemporaryDirectory(prefix="nasforge-conformance-") as scratch:
        source = _create("dataset", name, options, Path(scratch), {})
        assert isinstance(source, DatasetSource), f"dataset {name!r} built a {type(source).__name__}"
        with _skip_missing_data("dataset", name):
            splits = source.load(seed=0)
            again = source.load(seed=0)
    for split in ("train", "valid", "test"):
        data = getattr(splits, split)
        assert len(data) > 0, f"dataset {name!r}: {split} split is empty"
        image, label = data[0]
        assert tuple(image.shape) == (splits.in_channels, *splits.input_size), f"dataset {name!r}: {split} image {tuple(image.shape)}"
        labels = [int(data[i][1]) for i in range(min(len(data), 64))]
        assert all(0 <= v < splits.num_classes for v in labels), f"dataset {name!r}: {split} labels outside [0, {splits.num_classes})"
    first = [int(splits.valid[i][1]) for i in range(min(len(splits.valid), 32))]
    assert first == [int(again.valid[i][1]) for i in range(len(first))], f"dataset {name!r}: seed 0 gave two different splits"


# -- the newer kinds: criterion, rule, cost_model, encoding, step ------------------------------------


def check_criterion(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Raise AssertionError unless criterion ``name`` gives a finite scalar loss with gradients.

    ``prepare(images, labels)`` then ``criterion(model(inputs), targets)`` on a tiny network and a
    batch of 1x8x8 images; the loss is a finite scalar and ``backward`` reaches the network.
    """
    torch.manual_seed(0)
    model = tiny_model()
    teacher = tiny_model().eval()
    with tempfile.TemporaryDirectory(prefix="nasforge-conformance-") as scratch:
        criterion = _create("criterion", name, options, Path(scratch), {"teacher": teacher})
    assert callable(criterion), f"criterion {name!r} built a {type(criterion).__name__}, which is not callable"
    images = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8) % 4
    inputs, targets = criterion.prepare(images, labels) if isinstance(criterion, Criterion) else (images, labels)
    loss = criterion(model(inputs), targets)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0, f"criterion {name!r}: the loss is not a scalar tensor"
    assert torch.isfinite(loss), f"criterion {name!r}: loss {loss.item()}"
    loss.backward()
    assert any(p.grad is not None for p in model.parameters()), f"criterion {name!r}: no gradient reaches the network"


def check_rule(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Raise AssertionError unless supernet training rule ``name`` draws valid paths.

    ``paths(space, rng)`` on a one-cell NB201 space gives a non-empty list of valid archs, the
    same list again for the same seed.
    """
    space = make_space(DEFAULT_SPACE)
    with tempfile.TemporaryDirectory(prefix="nasforge-conformance-") as scratch:
        rule = _create("rule", name, options, Path(scratch), {"space": space})
    paths = rule.paths(space, np.random.default_rng(0))
    assert paths, f"rule {name!r} trains no path"
    for arch in paths:
        space.validate(arch)
    assert rule.paths(space, np.random.default_rng(0)) == paths, f"rule {name!r}: the same seed drew other paths"


def check_cost_model(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Raise AssertionError unless cost model ``name`` fits block features and predicts ``(n,)``."""
    from nasforge.hardware.costmodels import BlockFeatures

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 4, size=(30, 5))
    costs = rng.uniform(0.1, 1.0, size=(30, 5))
    features = BlockFeatures(tokens, costs, 4)
    y = costs.sum(axis=1) * 1.1 + 0.2
    with tempfile.TemporaryDirectory(prefix="nasforge-conformance-") as scratch:
        model = _create("cost_model", name, options, Path(scratch), {})
    assert model.fit(features[:24], y[:24]) is model, f"cost model {name!r}: fit must return self"
    predicted = np.asarray(model.predict(features[24:]))
    assert predicted.shape == (6,) and np.isfinite(predicted).all(), f"cost model {name!r}: predict gave {predicted.shape}"
    copy = pickle.loads(pickle.dumps(model))
    assert np.allclose(copy.predict(features[24:]), predicted), f"cost model {name!r}: a pickled copy predicts differently"


def check_encoding(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Raise AssertionError unless encoding ``name`` maps archs to fixed-width rows.

    On a one-cell NB201 space: one arch gives a 1-d vector, a list of ``n`` gives ``(n, d)``
    of the same width, equal archs encode equally.
    """
    space = make_space(DEFAULT_SPACE)
    with tempfile.TemporaryDirectory(prefix="nasforge-conformance-") as scratch:
        encoder = _create("encoding", name, options, Path(scratch), {"space": space})
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(4)]
    rows = np.asarray(encoder(archs))
    assert rows.ndim == 2 and rows.shape[0] == 4 and rows.shape[1] > 0, f"encoding {name!r}: shape {rows.shape}"
    one = np.asarray(encoder(archs[0]))
    assert one.shape == rows.shape[1:] and np.allclose(one, rows[0]), f"encoding {name!r}: one arch encodes differently"


def check_step(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Raise AssertionError unless pipeline step kind ``name`` builds a well-formed
    :class:`~nasforge.runner.pipeline.StepKind`: option and output names that are strings, and
    callable ``prepare`` and ``run`` (running a step is a whole search: tested elsewhere)."""
    from nasforge.runner.pipeline import StepKind

    with tempfile.TemporaryDirectory(prefix="nasforge-conformance-") as scratch:
        kind = _create("step", name, options, Path(scratch), {})
    assert isinstance(kind, StepKind), f"step {name!r} built a {type(kind).__name__}, not a StepKind"
    assert all(isinstance(o, str) for o in kind.options), f"step {name!r}: option names must be strings"
    assert kind.outputs and all(isinstance(o, str) for o in kind.outputs), f"step {name!r}: outputs {kind.outputs!r}"
    assert callable(kind.prepare) and callable(kind.run), f"step {name!r}: prepare and run must be callable"


def _check_strategy(name: str, options: Mapping[str, Any] | None = None) -> None:
    from nasforge.testing.conformance import check_strategy

    if options:
        raise ValueError("check_strategy builds the strategy with its defaults; options are not supported")
    check_strategy(name)


def check_executor(name: str, options: Mapping[str, Any] | None = None) -> None:
    """A random search on the toy space through executor ``name`` gives the trials of the
    sequential executor (random search proposes independently of results)."""
    from nasforge.objectives.basic import SingleMetric
    from nasforge.runner.loop import Budget, Runner
    from nasforge.strategies.random_search import RandomSearch
    from nasforge.testing import SyntheticEstimator, ToySpace

    def trials(executor: Any) -> list[tuple[Any, ...]]:
        runner = Runner(ToySpace(), RandomSearch(), SyntheticEstimator(noise=1.0), SingleMetric(), budget=Budget(trials=6),
                        seed=1, executor=executor)
        return [(t.number, t.arch, t.seed, t.values) for t in runner.run().trials]

    opts = conformance_options("executor", name) if options is None else dict(options)
    try:
        executor = registry.create("executor", name, opts)
    except ConfigError as exc:  # an engine from an optional extra that is not installed (ray)
        if "pip install nasforge[" in str(exc):
            raise unittest.SkipTest(f"executor {name!r}: {exc}") from None
        raise
    assert trials(executor) == trials(None), f"executor {name!r}: trials differ from the sequential executor's"


#: The check of each kind (tests/test_conformance.py asserts every kind has one).
CHECKS: dict[str, Callable[..., None]] = {
    "space": check_space,
    "strategy": _check_strategy,
    "estimator": check_estimator,
    "objective": check_objective,
    "predictor": check_predictor,
    "dataset": check_dataset,
    "criterion": check_criterion,
    "rule": check_rule,
    "cost_model": check_cost_model,
    "encoding": check_encoding,
    "step": check_step,
    "executor": check_executor,
}


def check(kind: str, name: str, options: Mapping[str, Any] | None = None) -> None:
    """Run ``kind``'s conformance check on the registered component ``name``."""
    if kind not in registry.KINDS:
        raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(registry.KINDS)}")
    CHECKS[kind](name, options)
