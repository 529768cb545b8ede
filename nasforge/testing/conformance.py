"""Conformance checks every registered strategy must pass (used by the test suite, and by plugin
authors on their own strategies: ``check_strategy("my_strategy")``)."""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Mapping

import torch
from torch import nn

from nasforge.core import registry
from nasforge.core.arch import Arch, Choice
from nasforge.core.differentiable import ArchParameters
from nasforge.core.history import TrialLog
from nasforge.core.objective import Objective
from nasforge.core.space import SearchSpace
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Trial, TrialStatus
from nasforge.objectives.basic import Pareto, SingleMetric
from nasforge.testing import SyntheticEstimator, ToySpace, drive
from nasforge.testing.common import make_space, same_state

__all__ = ["TinySpace", "FITTING_SPACES", "objective_for", "make_strategy", "spaces_for", "check_strategy"]


class TinySpace(SearchSpace):
    """Four archs: small enough that any strategy exhausts it quickly."""

    def choices(self) -> Mapping[str, Choice]:
        return {"op": Choice("op", ("conv3x3", "conv5x5")), "width": Choice("width", (16, 24), ordered=True)}

    def build(self, arch: Arch) -> nn.Module:
        return ToySpace().build(Arch({**arch, "residual": False, "depth": 1}))


#: Spaces for strategies that do not fit :class:`ToySpace` (the differentiable ones need a
#: supernet, P-DARTS DARTS-style edges): the first each strategy fits is used, at a tiny size.
FITTING_SPACES: tuple[dict[str, object], ...] = (
    {"type": "nb201", "C": 2, "N": 1},
    {"type": "darts", "C": 2, "layers": 3, "supernet_C": 2, "supernet_layers": 3},
)


def _hashed_score(arch: Arch) -> dict[str, float]:
    """Metrics for any arch: deterministic, distinct per arch (a stand-in for training)."""
    digest = zlib.crc32(str(arch).encode())
    return {"val_acc": (digest % 1000) / 10, "latency_ms": (digest // 1000 % 100) / 10}


def _move_alphas(strategy: Strategy) -> None:
    """One architecture step on a synthetic loss, so that a differentiable strategy's state
    differs from a fresh one's (``drive`` never trains alphas) and a resume that loses it shows."""
    if not isinstance(strategy, ArchParameters):
        return
    weights = strategy.weights("arch")
    loss = sum((w * torch.arange(w.shape[-1], dtype=w.dtype)).sum() for w in weights.values())
    loss.backward()  # type: ignore[union-attr]
    strategy.step()
    strategy.end_epoch()


def spaces_for(name: str) -> tuple[SearchSpace, SearchSpace | None, SyntheticEstimator]:
    """The space a strategy's contract is checked on, a tiny one to exhaust (None when the
    strategy fits no such space) and an estimator scoring its archs."""
    from nasforge.core.capabilities import combination_problem

    if combination_problem(ToySpace(), name) is None:
        return ToySpace(), TinySpace(), SyntheticEstimator()
    for spec in FITTING_SPACES:
        space = make_space(spec)
        if combination_problem(space, name) is None:
            return space, None, SyntheticEstimator(_hashed_score)
    raise AssertionError(f"strategy {name!r} fits none of the conformance spaces {[s['type'] for s in FITTING_SPACES]}")


def _tiny_score(arch: Arch) -> dict[str, float]:
    return {"val_acc": 1.0 + (arch["op"] == "conv5x5") + int(arch["width"]) / 100, "latency_ms": float(arch["width"])}


def objective_for(name: str) -> Objective:
    """A Pareto objective for strategies tagged ``multi-objective``, else plain accuracy."""
    if "multi-objective" in registry.get("strategy", name).tags:
        return Pareto(metrics={"val_acc": "max", "latency_ms": "min"})
    return SingleMetric("val_acc")


def make_strategy(name: str) -> Strategy:
    """The strategy with every option at its default (every option must have one)."""
    return registry.create("strategy", name, {})


def check_strategy(name: str, n_trials: int = 30, split: int = 12) -> None:
    """Raise AssertionError unless ``name`` honours the strategy contract.

    Checks: default construction; every asked arch is valid; failed trials are accepted;
    ``state_dict`` survives pickling and, with the history rebuilt from the told trials (as the
    runner rebuilds it from the store), resumes the exact same sequence of archs; setting up
    again starts the search afresh; a tiny space is handled without hanging (ask returns None or
    keeps returning valid archs).
    """
    space, tiny, estimator = spaces_for(name)
    objective = objective_for(name)

    def alphas_at_split(number: int, strategy: Strategy) -> None:
        if number == split:
            _move_alphas(strategy)

    reference = drive(make_strategy(name), space, objective, estimator, n_trials, seed=3, before_ask=alphas_at_split)
    assert reference, f"{name}: asked nothing on {type(space).__name__}"
    for trial in reference:
        space.validate(trial.arch)

    first = make_strategy(name)
    head = drive(first, space, objective, estimator, split, seed=3)
    _move_alphas(first)
    state = pickle.loads(pickle.dumps(first.state_dict()))
    second = make_strategy(name)
    history = TrialLog(reference[: len(head)], key=space.effective)
    second.history = history
    second.setup(space, objective, seed=3)
    second.load_state_dict(state)
    assert same_state(second.state_dict(), state), f"{name}: load_state_dict did not restore the state it was given"
    tail = []
    for number in range(split, len(reference)):
        arch = second.ask()
        if arch is None:
            break
        tail.append(arch)
        history.record_ask(arch)
        history.record_tell(reference[number])
        second.tell(reference[number])  # the same trials the uninterrupted run was told
    resumed = [t.arch for t in head] + tail
    assert resumed == [t.arch for t in reference], f"{name}: resuming from state_dict changed the archs asked"

    again = drive(first, space, objective, estimator, split, seed=3)  # set up a second time
    assert [t.arch for t in again] == [t.arch for t in head], f"{name}: a second setup kept search state"

    failing = make_strategy(name)
    log = TrialLog(key=space.effective)
    failing.history = log
    failing.setup(space, objective, seed=0)
    for number in range(8):
        arch = failing.ask()
        if arch is None:
            break
        log.record_ask(arch)
        trial = Trial(number=number, arch=arch, seed=0, status=TrialStatus.FAILED, error="boom")
        log.record_tell(trial)
        failing.tell(trial)

    if tiny is None:
        return
    trials = drive(make_strategy(name), tiny, objective, SyntheticEstimator(_tiny_score), 40, seed=1)
    for trial in trials:
        tiny.validate(trial.arch)
