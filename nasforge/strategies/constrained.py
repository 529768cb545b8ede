"""Search under a hard cost budget: constrained regularised evolution and random search with rejection.

OSNASLib's formulation (Huang & Chu): find the best arch with ``cost(a) <= C``, where ``cost``
is a sum of per-layer costs from a lookup table (:mod:`nasforge.hardware.lut`: FLOPs, parameters
or latency). Both strategies check every candidate against the table *before* asking it, so an
arch over budget is never evaluated. Without a ``budget`` they are plain regularised evolution
and plain random search.

Options (YAML)::

    strategy:
      type: constrained_evolution
      budget: {metric: flops, max: 5.0e6}          # table built from the space at the data's size
      # budget: {metric: latency_ms, max: 4.0, table: fbnet_cpu.json}   # from `nasforge profile`
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, PositiveInt

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.registry import register
from nasforge.core.space import ENUMERATE_LIMIT, SearchSpace
from nasforge.core.strategy import Strategy
from nasforge.hardware.lut import CostBudget, CostTable, budget_table
from nasforge.strategies.evolution import RegularizedEvolution
from nasforge.strategies.random_search import RandomSearch

if TYPE_CHECKING:
    from nasforge.core.objective import Objective

__all__ = ["BudgetCheck", "ConstrainedEvolution", "RejectionRandomSearch"]

InputSize = tuple[PositiveInt, PositiveInt]


class BudgetCheck:
    """A :class:`CostBudget` bound to a space: its table, and drawing archs until one fits.

    Setting up fails at once with a :class:`ConfigError` when even the cheapest arch of the
    space (by the table's bounds) is over budget.
    """

    def __init__(self, budget: CostBudget, space: SearchSpace, input_shape: tuple[int, ...]) -> None:
        self.budget = budget
        self.table: CostTable = budget_table(budget, space, input_shape)
        cheapest = self.table.bounds()[0]
        if cheapest > budget.max:
            raise ConfigError(
                f"budget {budget.metric} <= {budget.max:g} is infeasible: the cheapest arch of this space costs "
                f"{cheapest:g} (input {list(input_shape)}); raise budget.max"
            )

    def fits(self, arch: Arch) -> bool:
        """Whether ``arch`` costs at most the budget."""
        return self.table.predict(arch) <= self.budget.max

    def draw(self, propose: Callable[[], Arch | None], tries: int) -> Arch | None:
        """The first arch ``propose`` gives that fits the budget (None when it gives None).

        Raises:
            ConfigError: ``tries`` proposals in a row were over budget; names the smallest cost seen.
        """
        smallest = float("inf")
        for _ in range(tries):
            arch = propose()
            if arch is None:
                return None
            cost = self.table.predict(arch)
            if cost <= self.budget.max:
                return arch
            smallest = min(smallest, cost)
        raise ConfigError(
            f"no arch with {self.budget.metric} <= {self.budget.max:g} in {tries} tries; the smallest "
            f"{self.budget.metric} seen was {smallest:g}. Raise budget.max or max_tries"
        )


class _Budgeted(Strategy):
    """A strategy holding an optional budget, bound to the space (as a :class:`BudgetCheck`,
    ``self.check``; None without a budget) in :meth:`setup`."""

    def _hold_budget(self, budget: CostBudget | None, max_tries: int, input_shape: tuple[int, ...]) -> None:
        self.budget = budget
        self.max_tries = max_tries
        self.input_shape = input_shape
        self.check: BudgetCheck | None = None

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        self.check = None if self.budget is None else BudgetCheck(self.budget, space, self.input_shape)

    def sample_new(self) -> Arch | None:
        """A random arch the deduplication policy allows, within the budget; None once every arch
        within the budget is in the history (``max_tries`` draws over budget in a row raise the
        ConfigError of :meth:`BudgetCheck.draw` otherwise)."""
        draw = super().sample_new
        if self.check is None:
            return draw()
        try:
            return self.check.draw(draw, self.max_tries)
        except ConfigError:
            if self._exhausted():
                return None
            raise

    def _exhausted(self) -> bool:
        """Whether every arch within the budget is in the history (spaces small enough to list)."""
        if not self.deduplicate or self.check is None or self.space.size() > ENUMERATE_LIMIT:
            return False
        return not any(self.is_new(arch) and self.check.fits(arch) for arch in self.space.enumerate())


@register("strategy", "constrained_evolution", tags=("budget",))
class ConstrainedEvolution(_Budgeted, RegularizedEvolution):
    """Regularised evolution (Real et al. 2019) whose population only ever holds archs within
    ``budget`` (OSNASLib's evolution under a hardware constraint).

    Every proposal (a random arch while the population fills, then the mutated winner of a
    tournament) is checked against the cost table before it is asked; one over budget is
    dropped and a fresh tournament and mutation drawn, up to ``max_tries`` times, after which
    the search stops with an error naming the smallest cost seen.

    Args:
        budget: ``{metric, max, table}`` (see :class:`~nasforge.hardware.lut.CostBudget`);
            None for plain regularised evolution.
        population_size, sample_size, deduplicate: as in ``evolution``.
        max_tries: proposals over budget tolerated in a row before giving up.
        in_channels, input_size: the input the costs are counted at (filled from the data).
    """

    def __init__(
        self,
        budget: CostBudget | None = None,
        population_size: Annotated[int, Field(ge=2)] = 10,
        sample_size: Annotated[int, Field(ge=1)] = 5,
        deduplicate: bool = True,
        max_tries: PositiveInt = 1000,
        in_channels: PositiveInt = 3,
        input_size: InputSize = (32, 32),
    ) -> None:
        super().__init__(population_size, sample_size, deduplicate)
        self._hold_budget(budget, max_tries, (in_channels, *input_size))

    def _propose(self) -> Arch:
        if self.check is None:
            return super()._propose()
        arch = self.check.draw(super()._propose, self.max_tries)
        assert arch is not None  # _propose always proposes
        return arch


@register("strategy", "rejection_random", tags=("budget",))
class RejectionRandomSearch(_Budgeted, RandomSearch):
    """Random search that rejects archs over ``budget`` before asking them (OSNASLib's random
    search under a hardware constraint): uniform over the archs within budget.

    Args:
        budget: ``{metric, max, table}`` (see :class:`~nasforge.hardware.lut.CostBudget`);
            None for plain random search.
        deduplicate: never ask the same arch twice; the search ends once every arch within
            the budget has been asked.
        max_tries: draws over budget tolerated in a row before the search stops with an error
            naming the smallest cost seen.
        in_channels, input_size: the input the costs are counted at (filled from the data).
    """

    def __init__(
        self,
        budget: CostBudget | None = None,
        deduplicate: bool = True,
        max_tries: PositiveInt = 10_000,
        in_channels: PositiveInt = 3,
        input_size: InputSize = (32, 32),
    ) -> None:
        super().__init__(deduplicate)
        self._hold_budget(budget, max_tries, (in_channels, *input_size))
