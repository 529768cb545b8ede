"""The search-strategy contract: ask for archs, be told their trials, save and restore state.

Strategies never evaluate, store or schedule anything; the runner does (as Optuna's samplers leave
that to the study). Nor do they keep their own record of what was asked: they read the search's
:class:`~nasforge.core.history.History`, which the driver binds as ``strategy.history``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from nasforge.core.arch import Arch
from nasforge.core.component import Component
from nasforge.core.errors import ConfigError
from nasforge.core.history import History
from nasforge.core.trial import Trial

if TYPE_CHECKING:
    from nasforge.core.capabilities import ArchTraining, Capability
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["Strategy", "PendingPolicy", "rng_state", "restore_rng", "require_single_objective"]

#: See :attr:`Strategy.pending_policy`.
PendingPolicy = Literal["independent", "async", "constant_liar", "refuse"]


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


class Strategy(Component, ABC):
    """Base of every search strategy (ask/tell).

    The driver (the runner, or :func:`nasforge.testing.drive`) binds the search's history as
    ``strategy.history``, calls :meth:`setup`, then alternates :meth:`ask` and :meth:`tell`,
    recording every ask and told trial in that history. Every source of randomness is
    ``self.rng``, seeded in :meth:`setup`; :meth:`state_dict` captures it, so a search restored
    from a checkpoint (with its history rebuilt from the trial store) continues exactly as if
    never stopped. Subclasses extend :meth:`state_dict`/:meth:`load_state_dict` with their own
    state.

    ``__init__`` only stores options (scikit-learn style); :meth:`setup` creates all search
    state, so setting a strategy up again starts its search afresh.

    Deduplication is one policy, decided here: with ``deduplicate`` (True unless a strategy's
    option turns it off) no arch is asked twice in a search. Strategies test proposals with
    :meth:`is_new`, draw random ones with :meth:`sample_new` and retry with
    :meth:`propose_new`; ``ask`` returns None once every arch of the space is in the history.
    Strategies that derive their arch from learned parameters (differentiable, generator) ask
    whatever their parameters give.
    """

    space: SearchSpace
    objective: Objective
    rng: np.random.Generator
    #: The one deduplication default: never ask an arch already in the history.
    deduplicate: bool = True
    #: Capabilities the space must offer, and ones it must not (:mod:`nasforge.core.capabilities`).
    requires: ClassVar[frozenset[Capability]] = frozenset()
    excludes: ClassVar[frozenset[Capability]] = frozenset()
    #: Supernet modes the space must support (``"weighted"`` for strategies mixing candidates).
    modes: ClassVar[frozenset[str]] = frozenset()
    #: How its architecture parameters must be trained by the estimator; None: it has none.
    arch_parameters: ClassVar[ArchTraining | None] = None
    #: Which trial is the search's result: ``best`` (the best score) or ``last`` (the last
    #: completed trial: a differentiable search's arch from its final alphas, as the papers
    #: return). Every trial stays in the store either way.
    winner: ClassVar[Literal["best", "last"]] = "best"
    #: How it proposes while trials are in flight (an executor with several workers asks up to
    #: N archs before telling): ``independent`` (proposals never depend on results: random,
    #: grid), ``async`` (proposes from what was told so far, as asynchronous regularized
    #: evolution), ``constant_liar`` (an arch in flight counts as the worst value told so far
    #: until its real result comes: :meth:`lies`), ``refuse`` (cannot run with trials in flight:
    #: differentiable strategies, and any strategy that does not say). Executors with one worker
    #: never have an arch in flight at ``ask``.
    pending_policy: ClassVar[PendingPolicy] = "refuse"

    @property
    def history(self) -> History:
        """The search's trials and archs in flight, as the driver records them (read-only).

        Unbound (a strategy driven by hand), it is an empty history: bind a
        :class:`~nasforge.core.history.TrialLog` and record into it to deduplicate.
        """
        bound = self.__dict__.get("_history")
        if bound is None:
            bound = self.__dict__["_history"] = History()
        return bound

    @history.setter
    def history(self, history: History) -> None:
        self.__dict__["_history"] = history

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        """Bind the strategy to a space and an objective and seed its generator.

        Overrides create every piece of search state here (after calling this), never in
        ``__init__``, so a second ``setup`` starts afresh.
        """
        self.space = space
        self.objective = objective
        self.rng = np.random.default_rng(seed)

    # -- the deduplication policy ----------------------------------------------------------------

    def is_new(self, arch: Arch) -> bool:
        """Whether the policy lets ``arch`` be asked: always without deduplication, else only if it
        was neither asked nor told in this search."""
        return not self.deduplicate or arch not in self.history

    def sample_new(self) -> Arch | None:
        """A uniformly drawn valid arch the policy lets be asked; None once the space is exhausted
        (never without deduplication)."""
        if not self.deduplicate:
            return self.space.sample(self.rng)
        return self.space.sample_unseen(self.rng, self.history)

    def propose_new(
        self,
        propose: Callable[[], Arch],
        tries: int,
        on_known: Callable[[Arch], None] | None = None,
        *,
        fallback: Callable[[], Arch | None] | None = None,
    ) -> Arch | None:
        """The retry rule: the first of up to ``tries`` proposals :meth:`is_new` accepts; after
        ``tries`` rejections ``fallback()`` (default :meth:`sample_new`: a random new arch, None
        once the space is exhausted). ``on_known`` sees each rejected proposal (to learn from
        its known value)."""
        for _ in range(tries):
            arch = propose()
            if self.is_new(arch):
                return arch
            if on_known is not None:
                on_known(arch)
        return (fallback or self.sample_new)()

    def lies(self) -> list[tuple[Arch, float]]:
        """The constant liar's rule: each arch in flight (``history.pending()``, oldest first, not
        already told) with the worst finite value told so far (0.0 before any), which a
        ``constant_liar`` strategy treats as a told value while proposing. Read afresh at every
        ``ask``, a lie is undone when the real trial is told and never enters the strategy's state."""
        import math

        finite = [t.value for t in self.history.trials() if math.isfinite(t.value)]
        worst = min(finite) if finite else 0.0
        return [(arch, worst) for arch in self.history.pending() if self.history.told(arch) is None]

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
