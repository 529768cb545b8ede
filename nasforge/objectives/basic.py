"""Objectives: one metric, a weighted sum of metrics, or several metrics as a Pareto problem.

Each takes optional hard ``constraints`` (``[{metric: latency_pixel3, max: 20}]``): a trial that
breaks one is infeasible, strategies are told so, and it never wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from nasforge.core.objective import Constraint, Mode, Objective
from nasforge.core.registry import register

__all__ = ["SingleMetric", "WeightedSum", "Pareto"]


def _signed(metrics: Mapping[str, float], metric: str, mode: Mode) -> float:
    if metric not in metrics:
        raise KeyError(f"objective metric {metric!r} was not measured; measured: {', '.join(sorted(metrics))}")
    value = float(metrics[metric])
    return value if mode == "max" else -value


@register("objective", "single")
class SingleMetric(Objective):
    """Maximise (or minimise) one metric, e.g. validation accuracy."""

    def __init__(self, metric: str = "val_acc", mode: Mode = "max", constraints: Sequence[Constraint] = ()) -> None:
        super().__init__(constraints)
        self.metric = metric
        self.mode: Mode = mode

    @property
    def names(self) -> tuple[str, ...]:
        return (self.metric if self.mode == "max" else f"-{self.metric}",)

    def scored_metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def score(self, metrics: Mapping[str, float]) -> tuple[float, ...]:
        return (_signed(metrics, self.metric, self.mode),)


@register("objective", "weighted")
class WeightedSum(Objective):
    """A weighted sum of metrics (a soft penalty), e.g. ``val_acc - 0.5 * latency_ms``.

    ``weights`` maps metric names to weights; a negative weight penalises the metric.
    """

    #: Values for the required options that `nasforge gen-config` writes as a template.
    example_options: ClassVar[dict[str, Any]] = {"weights": {"val_acc": 1.0, "params": -1e-05}}

    def __init__(self, weights: dict[str, float], constraints: Sequence[Constraint] = ()) -> None:
        super().__init__(constraints)
        if not weights:
            raise ValueError("weights must name at least one metric")
        self.weights = dict(weights)

    @property
    def names(self) -> tuple[str, ...]:
        return ("+".join(f"{w:g}*{m}" for m, w in self.weights.items()),)

    def scored_metrics(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def score(self, metrics: Mapping[str, float]) -> tuple[float, ...]:
        return (sum(w * _signed(metrics, m, "max") for m, w in self.weights.items()),)


@register("objective", "pareto", tags=("multi-objective",))
class Pareto(Objective):
    """Several metrics at once; the search returns the Pareto front.

    ``metrics`` maps each metric to ``max`` or ``min``, e.g. ``{val_acc: max, latency_ms: min}``.
    """

    #: Values for the required options that `nasforge gen-config` writes as a template.
    example_options: ClassVar[dict[str, Any]] = {"metrics": {"val_acc": "max", "params": "min"}}

    def __init__(self, metrics: dict[str, Mode], constraints: Sequence[Constraint] = ()) -> None:
        super().__init__(constraints)
        if len(metrics) < 2:
            raise ValueError(f"a Pareto objective needs at least two metrics, got {list(metrics)}")
        self.metrics: dict[str, Mode] = dict(metrics)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m if mode == "max" else f"-{m}" for m, mode in self.metrics.items())

    def scored_metrics(self) -> tuple[str, ...]:
        return tuple(self.metrics)

    def score(self, metrics: Mapping[str, float]) -> tuple[float, ...]:
        return tuple(_signed(metrics, m, mode) for m, mode in self.metrics.items())
