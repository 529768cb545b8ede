"""Pareto-aware regularized evolution: the aging evolution of Real et al. 2019 ("Regularized
Evolution for Image Classifier Architecture Search", AAAI) with its tournament won by NSGA-II's
order (Deb et al. 2002, "A fast and elitist multiobjective genetic algorithm", IEEE TEC):
non-dominated rank first, crowding distance second."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import numpy as np
from pydantic import Field, PositiveInt

from nasforge.core.arch import Arch
from nasforge.core.registry import register
from nasforge.core.strategy import PendingPolicy, Strategy
from nasforge.core.trial import Trial
from nasforge.objectives.pareto import non_dominated_sort

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["ParetoEvolution", "crowding_distance"]


def crowding_distance(values: Sequence[Sequence[float]]) -> np.ndarray:
    """NSGA-II's crowding distance of each point within one front (boundary points: inf)."""
    points = np.asarray(values, dtype=float)
    distance = np.zeros(len(points))
    if len(points) <= 2:
        return np.full(len(points), np.inf)
    for column in points.T:
        order = np.argsort(column, kind="stable")
        span = column[order[-1]] - column[order[0]]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return distance


@register("strategy", "pareto_evolution", tags=("multi-objective",))
class ParetoEvolution(Strategy):
    """Regularized evolution for several objectives; the runner's trials give the Pareto front.

    The first ``population_size`` archs are random. Then each ask draws ``sample_size`` members
    of the population and mutates one choice of the winner: the member of the best
    non-dominated rank within the whole population, ties broken by the larger crowding
    distance (the less crowded part of the front). Each tell appends the child and removes the
    oldest member. Failed and infeasible members rank behind every feasible one. With one
    objective this is plain regularized evolution.

    No arch is asked twice: a child already asked is replaced by a new tournament's child (up
    to ``max_retries`` times), then a random unseen arch is asked; ``ask`` returns None once the space is exhausted.

    Args:
        population_size: P, members kept (the oldest leaves when a child joins).
        sample_size: S, the tournament size.
        max_retries: mutations per ask before falling back to a random unseen arch.
    """

    #: Asynchronous, as regularized evolution: parents come from the population told so far.
    pending_policy: ClassVar[PendingPolicy] = "async"

    def __init__(
        self,
        population_size: Annotated[int, Field(ge=2)] = 20,
        sample_size: PositiveInt = 5,
        max_retries: PositiveInt = 100,
    ) -> None:
        if sample_size > population_size:
            raise ValueError(f"sample_size={sample_size} must not exceed population_size={population_size}")
        self.population_size = population_size
        self.sample_size = sample_size
        self.max_retries = max_retries

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        self._population: deque[tuple[Arch, tuple[float, ...] | None]] = deque()

    def _order(self) -> list[tuple[int, float]]:
        """(rank, -crowding) of each member: smaller wins."""
        ok = [i for i, (_, values) in enumerate(self._population) if values is not None]
        keys = [(len(self._population), 0.0)] * len(self._population)
        fronts = non_dominated_sort([self._population[i][1] for i in ok])  # type: ignore[misc]
        for rank, front in enumerate(fronts):
            crowding = crowding_distance([self._population[ok[j]][1] for j in front])  # type: ignore[misc]
            for j, distance in zip(front, crowding, strict=True):
                keys[ok[j]] = (rank, -float(distance))
        return keys

    def _parent(self, keys: list[tuple[int, float]]) -> Arch:
        picks = self.rng.choice(len(self._population), size=min(self.sample_size, len(self._population)), replace=False)
        winner = min(picks, key=lambda i: keys[i])
        return self._population[int(winner)][0]

    def ask(self) -> Arch | None:
        if self.history.n_archs >= self.population_size and self._population:
            keys = self._order()
            return self.propose_new(lambda: self.space.mutate(self._parent(keys), self.rng), self.max_retries)
        return self.sample_new()

    def tell(self, trial: Trial) -> None:
        self._population.append((trial.arch, tuple(trial.values) if trial.ok and trial.values else None))
        if len(self._population) > self.population_size:
            self._population.popleft()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "population": [(a.to_dict(), None if v is None else list(v)) for a, v in self._population],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._population = deque((Arch(a), None if v is None else tuple(v)) for a, v in state["population"])
