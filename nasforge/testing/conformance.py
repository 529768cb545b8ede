"""Conformance checks every registered strategy must pass (used by the test suite, and by plugin
authors on their own strategies: ``check_strategy("my_strategy")``)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping

from torch import nn

from nasforge.core import registry
from nasforge.core.arch import Arch, Choice
from nasforge.core.history import TrialLog
from nasforge.core.objective import Objective
from nasforge.core.space import SearchSpace
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Trial, TrialStatus
from nasforge.objectives.basic import Pareto, SingleMetric
from nasforge.testing import SyntheticEstimator, ToySpace, drive

__all__ = ["TinySpace", "objective_for", "make_strategy", "check_strategy"]


class TinySpace(SearchSpace):
    """Four archs: small enough that any strategy exhausts it quickly."""

    def choices(self) -> Mapping[str, Choice]:
        return {"op": Choice("op", ("conv3x3", "conv5x5")), "width": Choice("width", (16, 24), ordered=True)}

    def build(self, arch: Arch) -> nn.Module:
        return ToySpace().build(Arch({**arch, "residual": False, "depth": 1}))


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
    space, estimator, objective = ToySpace(), SyntheticEstimator(), objective_for(name)

    reference = drive(make_strategy(name), space, objective, estimator, n_trials, seed=3)
    assert reference, f"{name}: asked nothing on a 72-arch space"
    for trial in reference:
        space.validate(trial.arch)

    first = make_strategy(name)
    head = drive(first, space, objective, estimator, split, seed=3)
    state = pickle.loads(pickle.dumps(first.state_dict()))
    second = make_strategy(name)
    history = TrialLog(reference[: len(head)])
    second.history = history
    second.setup(space, objective, seed=3)
    second.load_state_dict(state)
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
    log = TrialLog()
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

    tiny = TinySpace()
    trials = drive(make_strategy(name), tiny, objective, SyntheticEstimator(_tiny_score), 40, seed=1)
    for trial in trials:
        tiny.validate(trial.arch)
