"""The search-strategy contract: ask for archs, be told their trials, save and restore state.

Strategies never evaluate, store or schedule anything; the runner does (as Optuna's samplers leave
that to the study).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.trial import Trial

if TYPE_CHECKING:
    from nasforge.core.capabilities import ArchTraining, Capability
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["Strategy", "rng_state", "restore_rng", "require_single_objective"]


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The JSON-able state of a NumPy generator."""
    return dict(rng.bit_generator.state)


def restore_rng(state: dict[str, Any]) -> np.random.Generator:
    """A generator continuing exactly where :func:`rng_state` left off."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def require_single_objective(strategy: Strategy, objective: Objective) -> None:
    """Raise a ConfigError when a scalar strategy is given several objectives."""
    if objective.n_objectives != 1:
        raise ConfigError(
            f"{type(strategy).__name__} optimises one objective but got {objective.n_objectives} "
            f"({', '.join(objective.names)}); use a weighted objective or a strategy tagged multi-objective"
        )


class Strategy(ABC):
    """Base of every search strategy (ask/tell).

    The runner calls :meth:`setup` once, then alternates :meth:`ask` and :meth:`tell`. Every
    source of randomness is ``self.rng``, seeded in :meth:`setup`; :meth:`state_dict` captures
    it, so a search restored from a checkpoint continues exactly as if never stopped.
    Subclasses extend :meth:`state_dict`/:meth:`load_state_dict` with their own state.
    """

    space: SearchSpace
    objective: Objective
    rng: np.random.Generator
    #: Capabilities the space must offer, and ones it must not (:mod:`nasforge.core.capabilities`).
    requires: ClassVar[frozenset[Capability]] = frozenset()
    excludes: ClassVar[frozenset[Capability]] = frozenset()
    #: Supernet modes the space must support (``"weighted"`` for strategies mixing candidates).
    modes: ClassVar[frozenset[str]] = frozenset()
    #: How its architecture parameters must be trained by the estimator; None: it has none.
    arch_parameters: ClassVar[ArchTraining | None] = None

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        """Bind the strategy to a space and an objective and seed its generator."""
        self.space = space
        self.objective = objective
        self.rng = np.random.default_rng(seed)

    @abstractmethod
    def ask(self) -> Arch | None:
        """The next arch to evaluate, or None when the strategy has nothing left to ask."""

    def tell(self, trial: Trial) -> None:
        """Learn from a finished trial (complete or failed). The default ignores it."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume; must round-trip through :meth:`load_state_dict`."""
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after :meth:`setup`)."""
        self.rng = restore_rng(state["rng"])
