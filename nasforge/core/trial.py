"""`Result` (what an estimator says about an arch) and `Trial` (one evaluated arch in a search)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nasforge.core.arch import Arch

__all__ = ["Result", "TrialStatus", "Trial"]


@dataclass(frozen=True)
class Result:
    """What an estimator measured for one arch.

    Args:
        metrics: named numbers, e.g. ``{"val_acc": 93.1, "params": 1.2e6, "flops": 3.1e7}``.
            Accuracies are in percent; ``params`` and ``flops`` are plain counts.
        cost: what the measurement cost, e.g. ``{"seconds": 12.3, "epochs": 2}``.
        extras: anything else worth keeping (JSON-serialisable), e.g. a learning curve.
    """

    metrics: Mapping[str, float]
    cost: Mapping[str, float] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)


class TrialStatus(str, enum.Enum):
    """Lifecycle of a trial. Only COMPLETE trials carry metrics."""

    COMPLETE = "complete"
    FAILED = "failed"


@dataclass
class Trial:
    """One arch evaluated during a search, as the runner records it and strategies are told it.

    ``values`` is the objective's score, always *higher is better* (the objective negates
    metrics that are minimised), one entry per objective; empty when the trial failed.
    ``feasible`` is False when a hard constraint of the objective is broken.
    """

    number: int
    arch: Arch
    seed: int
    status: TrialStatus = TrialStatus.COMPLETE
    metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    values: tuple[float, ...] = ()
    feasible: bool = True
    error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the trial completed and meets every hard constraint."""
        return self.status is TrialStatus.COMPLETE and self.feasible

    @property
    def value(self) -> float:
        """The first (or only) objective value; -inf for failed or infeasible trials."""
        return self.values[0] if self.ok and self.values else float("-inf")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the arch as a plain mapping)."""
        return {
            "number": self.number,
            "arch": self.arch.to_dict(),
            "seed": self.seed,
            "status": self.status.value,
            "metrics": dict(self.metrics),
            "cost": dict(self.cost),
            "values": list(self.values),
            "feasible": self.feasible,
            "error": self.error,
            "extras": dict(self.extras),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        """Inverse of :meth:`to_dict`."""
        return cls(
            number=int(data["number"]),
            arch=Arch(data["arch"]),
            seed=int(data["seed"]),
            status=TrialStatus(data["status"]),
            metrics={k: float(v) for k, v in data.get("metrics", {}).items()},
            cost={k: float(v) for k, v in data.get("cost", {}).items()},
            values=tuple(float(v) for v in data.get("values", ())),
            feasible=bool(data.get("feasible", True)),
            error=data.get("error"),
            extras=dict(data.get("extras", {})),
        )
