"""Regularized (aging) evolution, Real et al. 2019, "Regularized Evolution for Image Classifier
Architecture Search" (AAAI). Tournament selection, one-choice mutation, and removal of the
*oldest* member rather than the worst, which keeps the population from clinging to lucky
early evaluations."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field

from nasforge.core.arch import Arch
from nasforge.core.registry import register
from nasforge.core.strategy import PendingPolicy, Strategy
from nasforge.core.trial import Trial

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["RegularizedEvolution"]


@register("strategy", "evolution")
class RegularizedEvolution(Strategy):
    """Regularized evolution (REA).

    The first ``population_size`` archs are random. Afterwards each ask draws ``sample_size``
    members of the population uniformly, mutates one choice of the best of them, and each tell
    appends the child and removes the oldest member. Failed and infeasible children join the
    population with the worst possible score and age out like any other.

    Args:
        population_size: P in the paper. Default 10, the size used for NAS-Bench-201-scale
            budgets (the paper's large-scale runs used P=100, S=25).
        sample_size: S, the tournament size.
        deduplicate: never ask an arch twice (the default of every strategy): a child
            already asked is replaced by a new tournament's child, up to 100 times, then by a
            random unseen arch; ``ask`` returns None once the space is exhausted. The paper
            does not deduplicate (``false``); it helps on small tabular spaces.
    """

    #: Asynchronous regularized evolution (Real et al. 2019, as their workers run it): a worker
    #: that frees up mutates a tournament winner of the population told so far.
    pending_policy: ClassVar[PendingPolicy] = "async"

    def __init__(
        self,
        population_size: Annotated[int, Field(ge=2)] = 10,
        sample_size: Annotated[int, Field(ge=1)] = 5,
        deduplicate: bool = True,
    ) -> None:
        if sample_size > population_size:
            raise ValueError(f"sample_size={sample_size} must not exceed population_size={population_size}")
        self.population_size = population_size
        self.sample_size = sample_size
        self.deduplicate = deduplicate

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        self._population: deque[tuple[Arch, float]] = deque()
        self._asked = 0

    def _propose(self) -> Arch:
        if self._asked < self.population_size or not self._population:
            return self.space.sample(self.rng)
        members = list(self._population)
        picks = self.rng.choice(len(members), size=min(self.sample_size, len(members)), replace=False)
        parent = max((members[i] for i in picks), key=lambda member: member[1])[0]
        return self.space.mutate(parent, self.rng)

    def ask(self) -> Arch | None:
        arch = self.propose_new(self._propose, 100)
        if arch is not None:
            self._asked += 1
        return arch

    def tell(self, trial: Trial) -> None:
        self._population.append((trial.arch, trial.value))
        if len(self._population) > self.population_size:
            self._population.popleft()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "population": [(arch.to_dict(), value) for arch, value in self._population],
            "asked": self._asked,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._population = deque((Arch(a), float(v)) for a, v in state["population"])
        self._asked = int(state["asked"])
