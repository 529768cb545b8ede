"""The objective contract: metrics -> scores (higher is better) and feasibility."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from nasforge.core.component import Component

__all__ = ["Constraint", "Objective", "Mode"]

Mode = Literal["max", "min"]


class Constraint(BaseModel):
    """A hard bound on one metric, e.g. ``{metric: latency_pixel3, max: 20}``.

    An arch that breaks it is infeasible: strategies are told so and it never wins.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> Constraint:
        if self.max is None and self.min is None:
            raise ValueError(f"constraint on {self.metric!r} needs 'max' or 'min'")
        return self

    def holds(self, metrics: Mapping[str, float]) -> bool:
        """True when the metric is present and within its bounds."""
        if self.metric not in metrics:
            raise KeyError(
                f"constraint metric {self.metric!r} was not measured; measured: {', '.join(sorted(metrics))}"
            )
        value = metrics[self.metric]
        return (self.max is None or value <= self.max) and (self.min is None or value >= self.min)


class Objective(Component, ABC):
    """Turns a trial's metrics into scores to maximise and a feasibility flag.

    Subclasses implement :meth:`score` and :attr:`names`; hard constraints are common to all.
    """

    def __init__(self, constraints: Sequence[Constraint] = ()) -> None:
        self.constraints = tuple(Constraint.model_validate(c) if isinstance(c, dict) else c for c in constraints)

    @property
    @abstractmethod
    def names(self) -> tuple[str, ...]:
        """One label per score, e.g. ``("val_acc",)`` or ``("val_acc", "-latency")``."""

    @abstractmethod
    def score(self, metrics: Mapping[str, float]) -> tuple[float, ...]:
        """Scores, each higher-is-better."""

    def scored_metrics(self) -> tuple[str, ...]:
        """The metrics :meth:`score` reads (checked against the estimator's before a search
        starts); the default, (), checks nothing."""
        return ()

    def required_metrics(self) -> tuple[str, ...]:
        """Every metric this objective reads: the scored ones, then each constraint's."""
        return tuple(dict.fromkeys([*self.scored_metrics(), *(c.metric for c in self.constraints)]))

    @property
    def n_objectives(self) -> int:
        """How many scores :meth:`score` returns (1 for scalar objectives)."""
        return len(self.names)

    def feasible(self, metrics: Mapping[str, float]) -> bool:
        """True when every hard constraint holds."""
        return all(c.holds(metrics) for c in self.constraints)
