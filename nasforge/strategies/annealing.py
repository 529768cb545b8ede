"""Simulated annealing over one-choice mutations (Kirkpatrick, Gelatt & Vecchi 1983, "Optimization
by Simulated Annealing", Science 220), with a geometric cooling schedule."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field, PositiveInt

from nasforge.core.arch import Arch
from nasforge.core.registry import register
from nasforge.core.strategy import PendingPolicy, Strategy, require_single_objective
from nasforge.core.trial import Trial

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["SimulatedAnnealing"]


@register("strategy", "annealing")
class SimulatedAnnealing(Strategy):
    """Random walk that always accepts a better neighbour and a worse one with probability
    ``exp(delta / (T * scale))``, while the temperature ``T`` cools geometrically.

    The walk starts at a random arch; each step mutates one choice of the current arch. After
    ``k`` told trials ``T = initial_temperature * cooling ** k``. ``scale`` is the standard
    deviation of the values seen so far, so temperatures do not depend on the metric's units:
    at ``T = 1`` a step one standard deviation worse is accepted with probability ``1/e``.

    No arch is asked twice: a mutation onto an arch already told moves the walk by its known
    value without a query. When ``max_retries`` mutations in a row land on known archs the walk
    restarts at a random unseen arch; ``ask`` returns None once the space is exhausted.

    Args:
        initial_temperature: ``T`` at the start, in standard deviations of the values.
        cooling: factor applied to ``T`` after each told trial (0.95 leaves about 1% of the
            initial temperature after 90 trials). The defaults were the best of a small grid
            (T0 in {0.3, 0.5, 1, 3}, cooling in {0.9, 0.93, 0.95, 0.97, 0.99}) at 150
            NAS-Bench-201 queries.
        max_retries: mutations tried per ask before restarting elsewhere.
    """

    #: Constant liar: an arch in flight counts as the worst value, which the walk never moves to;
    #: it moves by the Metropolis rule when the real value is told.
    pending_policy: ClassVar[PendingPolicy] = "constant_liar"

    def __init__(
        self,
        initial_temperature: Annotated[float, Field(gt=0)] = 0.3,
        cooling: Annotated[float, Field(gt=0, le=1)] = 0.95,
        max_retries: PositiveInt = 100,
    ) -> None:
        self.initial_temperature = initial_temperature
        self.cooling = cooling
        self.max_retries = max_retries

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        require_single_objective(self, objective)
        self._values: dict[Arch, float] = {}
        self._moments = (0, 0.0, 0.0)
        self._current: Arch | None = None

    @property
    def temperature(self) -> float:
        """The current temperature, in standard deviations of the values seen."""
        return self.initial_temperature * self.cooling ** len(self._values)

    def _record(self, arch: Arch, value: float) -> None:
        """Remember a told value; finite ones update the running variance (Welford)."""
        self._values[arch] = value
        if math.isfinite(value):
            count, mean, m2 = self._moments
            count += 1
            delta = value - mean
            mean += delta / count
            self._moments = (count, mean, m2 + delta * (value - mean))

    def _scale(self) -> float:
        """Standard deviation of the finite values told so far (1 until it is positive)."""
        count, _, m2 = self._moments
        spread = math.sqrt(m2 / count) if count > 1 else 0.0
        return spread if spread > 0 else 1.0

    def _restart(self) -> Arch | None:
        self._current = self.sample_new()
        return self._current

    def _step(self, arch: Arch, value: float) -> None:
        """Move to ``arch`` by the Metropolis rule."""
        assert self._current is not None
        current = self._values.get(self._current, float("-inf"))
        if value >= current:
            self._current = arch
            return
        if not math.isfinite(value):
            return
        if self.rng.random() < math.exp((value - current) / (self.temperature * self._scale())):
            self._current = arch

    def _mutate(self) -> Arch:
        assert self._current is not None
        return self.space.mutate(self._current, self.rng)

    def _known(self, arch: Arch) -> None:
        """A mutation onto an arch already told moves the walk by its known value."""
        if arch in self._values:
            self._step(arch, self._values[arch])

    def ask(self) -> Arch | None:
        if self._current is None:
            return self._restart()
        return self.propose_new(self._mutate, self.max_retries, self._known, fallback=self._restart)

    def tell(self, trial: Trial) -> None:
        if trial.arch in self._values:
            return
        self._record(trial.arch, trial.value)
        if self._current is not None and trial.arch != self._current:
            self._step(trial.arch, trial.value)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "values": [(a.to_dict(), v) for a, v in self._values.items()],
            "current": None if self._current is None else self._current.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._values, self._moments = {}, (0, 0.0, 0.0)
        for arch, value in state["values"]:
            self._record(Arch(arch), float(value))
        self._current = None if state["current"] is None else Arch(state["current"])
