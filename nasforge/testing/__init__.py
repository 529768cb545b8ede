"""Test helpers shipped with nasforge: a toy space, a synthetic estimator and a bare ask/tell loop.

Plugin authors use them to check their own components against the same contracts the built-in
ones pass (see ``tests/test_strategy_conformance.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from nasforge.core.arch import Arch, Choice
from nasforge.core.estimator import Context, Estimator
from nasforge.core.history import TrialLog
from nasforge.core.objective import Objective
from nasforge.core.seeding import derive_seed
from nasforge.core.space import SearchSpace
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Result, Trial, TrialStatus

__all__ = ["ToySpace", "SyntheticEstimator", "drive"]


class ToySpace(SearchSpace):
    """A small space (3 x 4 x 2 x 3 = 72 archs) with an op, a width, a flag and a depth."""

    def __init__(self) -> None:
        self._choices = {
            "op": Choice("op", ("conv3x3", "conv5x5", "pool")),
            "width": Choice("width", (8, 16, 24, 32), ordered=True),
            "residual": Choice("residual", (False, True)),
            "depth": Choice("depth", (1, 2, 3), ordered=True),
        }

    def choices(self) -> Mapping[str, Choice]:
        return self._choices

    def build(self, arch: Arch) -> nn.Module:
        self.validate(arch)
        width = int(arch["width"])
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for _ in range(int(arch["depth"])):
            kernel = 5 if arch["op"] == "conv5x5" else 3
            layers.append(nn.MaxPool2d(3, 1, 1) if arch["op"] == "pool" else nn.Conv2d(width, width, kernel, padding=kernel // 2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)]
        return nn.Sequential(*layers)


def toy_score(arch: Arch) -> dict[str, float]:
    """Deterministic synthetic metrics: accuracy peaks at conv5x5, width 24, residual, depth 3."""
    acc = 50.0
    acc += {"conv3x3": 10.0, "conv5x5": 20.0, "pool": 0.0}[str(arch["op"])]
    acc += {8: 0.0, 16: 5.0, 24: 10.0, 32: 7.0}[int(arch["width"])]
    acc += 5.0 if arch["residual"] else 0.0
    acc += 3.0 * int(arch["depth"])
    params = float(arch["width"]) ** 2 * int(arch["depth"]) * (25 if arch["op"] == "conv5x5" else 9)
    return {"val_acc": acc, "params": params, "latency_ms": params / 1000.0}


class SyntheticEstimator(Estimator):
    """Looks metrics up from a function of the arch (default :func:`toy_score`); optional noise."""

    def __init__(self, score: Callable[[Arch], dict[str, float]] = toy_score, noise: float = 0.0) -> None:
        self.score = score
        self.noise = noise

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        import numpy as np

        metrics = dict(self.score(arch))
        if self.noise:
            metrics["val_acc"] += float(np.random.default_rng(ctx.seed).normal(0.0, self.noise))
        return Result(metrics=metrics, cost={"seconds": 0.0})


def drive(
    strategy: Strategy,
    space: SearchSpace,
    objective: Objective,
    estimator: Estimator,
    n_trials: int,
    *,
    seed: int = 0,
    before_ask: Callable[[int, Strategy], None] | None = None,
) -> list[Trial]:
    """A bare ask -> estimate -> score -> tell loop (no store, no checkpoints), for tests;
    ``before_ask(number, strategy)`` runs before each ask (e.g. to step a strategy's alphas).

    Like the runner, it binds a fresh :class:`~nasforge.core.history.TrialLog` as
    ``strategy.history`` and records every ask and told trial in it. Stops early when the
    strategy returns None.
    """
    log = TrialLog(key=space.effective)
    strategy.history = log
    strategy.setup(space, objective, seed=seed)
    trials: list[Trial] = []
    for number in range(n_trials):
        if before_ask is not None:
            before_ask(number, strategy)
        arch = strategy.ask()
        if arch is None:
            break
        log.record_ask(arch)
        trial_seed = derive_seed(seed, number)
        result = estimator.estimate(arch, Context(space=space, seed=trial_seed))
        metrics = dict(result.metrics)
        trial = Trial(
            number=number,
            arch=arch,
            seed=trial_seed,
            status=TrialStatus.COMPLETE,
            metrics=metrics,
            cost=dict(result.cost),
            values=objective.score(metrics),
            feasible=objective.feasible(metrics),
        )
        log.record_tell(trial)
        strategy.tell(trial)
        trials.append(trial)
    return trials
