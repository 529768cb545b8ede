"""Optuna's samplers as nasforge strategies, through Optuna's ask/tell interface.

Each choice of the space becomes a ``CategoricalDistribution``; scores go to a study that
maximises every objective; failed trials are told ``FAIL``; broken hard constraints are set on the
trial as Optuna constraints (``Trial.set_constraint``: one value per constraint of the objective,
positive by how much it is broken), which TPE, GP and NSGA-II/III handle; the random and QMC
samplers ignore scores anyway.

Resuming is exact. ``state_dict`` holds every trial of the study (params, state, values, system
attributes) and the study's system attributes, where QMC and NSGA-II keep their progress;
``load_state_dict`` rebuilds the study with ``add_trial``. The sampler itself is created afresh
before every ``ask``, seeded from the strategy's generator, so no hidden sampler state (random
generators, GP caches) survives between asks and the continuation matches an uninterrupted run.
(QMC keeps one seed for the run: its scramble must not change between points.)

Needs Optuna >= 5.0 (``Trial.set_constraint``). References: Akiba et al. 2019, "Optuna: A
Next-generation Hyperparameter Optimization Framework" (KDD); the samplers' own papers are cited
in the convenience registrations below.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.registry import register
from nasforge.core.strategy import PendingPolicy, Strategy
from nasforge.core.trial import Trial, TrialStatus

if TYPE_CHECKING:
    import optuna

    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["OptunaStrategy", "TPE", "NSGA2", "SAMPLERS"]

SamplerName = Literal["tpe", "gp", "qmc", "random", "nsgaii", "nsgaiii"]
SAMPLERS: tuple[str, ...] = ("tpe", "gp", "qmc", "random", "nsgaii", "nsgaiii")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:  # an optional dependency
        raise ConfigError("the optuna strategies need Optuna: pip install 'nasforge[search]'") from None
    return optuna


@contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Hold Optuna's own logger at WARNING or above for the duration, then restore its level.

    Optuna logs every created study and finished trial at INFO, noise inside a search. Only the
    ``optuna`` logger is touched, and only while nasforge calls into Optuna, so the user's
    logging configuration (Optuna's verbosity included) is the same before and after. Used as a
    decorator on the methods that call Optuna.
    """
    _optuna()  # importing Optuna sets its logger's level: save the level after that
    logger = logging.getLogger("optuna")
    previous = logger.level
    logger.setLevel(max(previous, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _sampler_class(name: str) -> type[optuna.samplers.BaseSampler]:
    samplers = _optuna().samplers
    classes = {
        "tpe": samplers.TPESampler,
        "gp": samplers.GPSampler,
        "qmc": samplers.QMCSampler,
        "random": samplers.RandomSampler,
        "nsgaii": samplers.NSGAIISampler,
        "nsgaiii": samplers.NSGAIIISampler,
    }
    if name not in classes:
        raise ConfigError(f"unknown Optuna sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return classes[name]


@dataclass(frozen=True)
class _Outcome:
    """What the study is told about an arch: Optuna state name, values, constraint values."""

    state: str
    values: tuple[float, ...] | None = None
    constraints: dict[str, float] | None = None


@register("strategy", "optuna", tags=("multi-objective",))
class OptunaStrategy(Strategy):
    """Any Optuna sampler as a strategy (one objective or several).

    No arch is asked twice: when the sampler proposes an arch already told, the study is told
    its known outcome (a genuine observation, no query) and the sampler asked again, up to
    ``max_retries`` times; then a random unseen arch is enqueued instead. ``ask`` returns None
    once the space is exhausted. An arch that breaks a constraint of the space is told ``FAIL``.

    Args:
        sampler: ``tpe``, ``gp``, ``qmc``, ``random``, ``nsgaii`` or ``nsgaiii``.
        sampler_options: keyword arguments of the Optuna sampler (all but ``seed``, which comes
            from the run seed), e.g. ``{n_startup_trials: 20}`` for TPE.
        max_retries: proposals per ask before falling back to a random unseen arch. GP refits
            its model for every proposal: give it 1 or 2.
    """

    #: Archs in flight are RUNNING trials of the Optuna study, which each sampler treats its own
    #: way (NSGA-II: asynchronous generations); ``tpe`` lies about them (constant liar).
    pending_policy: ClassVar[PendingPolicy] = "async"

    def __init__(
        self,
        sampler: SamplerName = "tpe",
        sampler_options: dict[str, Any] | None = None,
        max_retries: PositiveInt = 10,
    ) -> None:
        self.sampler_name = sampler
        self.sampler_options = dict(sampler_options or {})
        self.max_retries = max_retries
        if "seed" in self.sampler_options:
            raise ValueError("sampler_options must not set 'seed': it is derived from the run seed")
        self._make_sampler(0, quiet=False)  # checks the options now, before anything runs

    def _make_sampler(self, seed: int, quiet: bool = True) -> optuna.samplers.BaseSampler:
        """The sampler; ``quiet`` silences its warnings (shown once, at construction)."""
        cls = _sampler_class(self.sampler_name)
        try:
            with warnings.catch_warnings():
                if quiet:
                    warnings.simplefilter("ignore")
                return cls(seed=seed, **self.sampler_options)
        except TypeError as exc:
            raise ValueError(f"invalid sampler_options for Optuna's {cls.__name__}: {exc}") from None

    @_optuna_quiet()
    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        optuna = _optuna()
        self._distributions = {
            name: optuna.distributions.CategoricalDistribution(choice.candidates)
            for name, choice in space.choices().items()
        }
        self._run_seed = int(self.rng.integers(2**31))
        self._new_study()
        self._known: dict[Arch, _Outcome] = {}
        self._pending: dict[Arch, optuna.trial.Trial] = {}

    def _new_study(self) -> None:
        optuna = _optuna()
        self._storage = optuna.storages.InMemoryStorage()
        self._study = optuna.create_study(
            storage=self._storage,
            sampler=optuna.samplers.RandomSampler(seed=0),  # replaced before every ask
            directions=["maximize"] * self.objective.n_objectives,
        )
        self._study_id = self._storage.get_study_id_from_name(self._study.study_name)

    # -- asking --------------------------------------------------------------------------------

    def _ask_study(self) -> optuna.trial.Trial:
        seed = self._run_seed if self.sampler_name == "qmc" else int(self.rng.integers(2**31))
        self._study.sampler = self._make_sampler(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _optuna().exceptions.ExperimentalWarning)
            return self._study.ask(self._distributions)

    def _arch_of(self, trial: optuna.trial.Trial) -> Arch:
        return Arch({name: trial.params[name] for name in self._distributions})

    @_optuna_quiet()
    def ask(self) -> Arch | None:
        for _ in range(self.max_retries):
            trial = self._ask_study()
            arch = self._arch_of(trial)
            if not self.space.is_valid(arch):
                self._finish(trial, _Outcome("FAIL"))
            elif self.is_new(arch):
                self._pending[arch] = trial
                return arch
            else:  # known: tell its outcome; pending elsewhere: nothing to tell yet
                self._finish(trial, self._known.get(arch, _Outcome("FAIL")))
        arch = self.sample_new()
        if arch is None:
            return None
        self._study.enqueue_trial(arch.to_dict())
        trial = self._ask_study()
        self._pending[arch] = trial
        return arch

    # -- telling -------------------------------------------------------------------------------

    def _violations(self, trial: Trial) -> dict[str, float] | None:
        """One value per hard constraint, > 0 by how much it is broken (None: no constraints)."""
        if not self.objective.constraints:
            return None
        found = {}
        for i, c in enumerate(self.objective.constraints):
            value = trial.metrics[c.metric]
            bounds = ([value - c.max] if c.max is not None else []) + ([c.min - value] if c.min is not None else [])
            found[f"{i}:{c.metric}"] = max(bounds)
        return found

    def _outcome(self, trial: Trial) -> _Outcome:
        if trial.status is not TrialStatus.COMPLETE or not trial.values:
            return _Outcome("FAIL")
        if not all(math.isfinite(v) for v in trial.values):
            return _Outcome("FAIL")
        constraints = self._violations(trial)
        if constraints is None and not trial.feasible:  # infeasible for a reason we cannot tell Optuna
            return _Outcome("FAIL")
        return _Outcome("COMPLETE", tuple(trial.values), constraints)

    def _finish(self, trial: optuna.trial.Trial, outcome: _Outcome) -> None:
        state = _optuna().trial.TrialState[outcome.state]
        for key, value in (outcome.constraints or {}).items():
            trial.set_constraint(key, value)
        self._study.tell(trial, values=list(outcome.values) if outcome.values else None, state=state)

    @_optuna_quiet()
    def tell(self, trial: Trial) -> None:
        outcome = self._outcome(trial)
        self._known[trial.arch] = outcome
        pending = self._pending.pop(trial.arch, None)
        if pending is not None:
            self._finish(pending, outcome)
        else:  # a trial this strategy did not ask (a warm start): add it as it is
            self._add(trial.arch.to_dict(), outcome.state, outcome.values, _constraint_attrs(outcome.constraints))

    def _add(self, params: dict[str, Any], state: str, values: Any, system_attrs: dict[str, Any]) -> None:
        optuna = _optuna()
        self._study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState[state],
                params=params,
                distributions=self._distributions,
                values=list(values) if values else None,
                system_attrs=system_attrs,
            )
        )

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        trials = self._study.get_trials(deepcopy=False)
        return {
            **super().state_dict(),
            "run_seed": self._run_seed,
            "trials": [
                {
                    "params": dict(t.params),
                    "state": t.state.name,
                    "values": None if t.values is None else list(t.values),
                    "system_attrs": dict(t.system_attrs),
                }
                for t in trials
            ],
            "study_system_attrs": dict(self._storage.get_study_system_attrs(self._study_id)),
            "known": [(a.to_dict(), o.state, o.values, o.constraints) for a, o in self._known.items()],
            "pending": [(a.to_dict(), t.number) for a, t in self._pending.items()],
        }

    @_optuna_quiet()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        optuna = _optuna()
        self._run_seed = int(state["run_seed"])
        self._new_study()
        for t in state["trials"]:
            self._add(t["params"], t["state"], t["values"], t["system_attrs"])
        for key, value in state["study_system_attrs"].items():
            self._storage.set_study_system_attr(self._study_id, key, value)
        self._known = {Arch(a): _Outcome(s, None if v is None else tuple(v), c) for a, s, v, c in state["known"]}
        # Wrapping a running trial calls the sampler's before_trial: use an inert sampler for it.
        self._study.sampler = optuna.samplers.RandomSampler(seed=0)
        self._pending = {
            Arch(a): optuna.trial.Trial(
                self._study, self._storage.get_trial_id_from_study_id_trial_number(self._study_id, n)
            )
            for a, n in state["pending"]
        }


def _constraint_attrs(constraints: dict[str, float] | None) -> dict[str, Any]:
    """Constraint values as the trial system attributes Optuna stores them in."""
    trial = _optuna().trial.create_trial(state=_optuna().trial.TrialState.FAIL, constraints=constraints)
    return dict(trial.system_attrs)


@register("strategy", "tpe", tags=("multi-objective",))
class TPE(OptunaStrategy):
    """Tree-structured Parzen estimator (Bergstra et al. 2011, "Algorithms for Hyper-Parameter
    Optimization", NeurIPS; multivariate: Falkner et al. 2018, BOHB), via Optuna's TPESampler.

    Args:
        n_startup_trials: random trials before the model is used.
        multivariate: model the choices jointly; None lets Optuna decide (joint for one
            objective, independent for several).
        max_retries: proposals per ask before falling back to a random unseen arch.
    """

    #: Optuna's constant liar (``TPESampler(constant_liar=True)``): RUNNING trials count as the
    #: worst value; with one worker none is running at an ask, so nothing changes.
    pending_policy: ClassVar[PendingPolicy] = "constant_liar"

    def __init__(
        self, n_startup_trials: PositiveInt = 10, multivariate: bool | None = None, max_retries: PositiveInt = 10
    ) -> None:
        options = {"n_startup_trials": n_startup_trials, "multivariate": multivariate, "constant_liar": True}
        super().__init__("tpe", options, max_retries)


@register("strategy", "nsga2", tags=("multi-objective",))
class NSGA2(OptunaStrategy):
    """NSGA-II (Deb et al. 2002, "A fast and elitist multiobjective genetic algorithm", IEEE TEC),
    via Optuna's NSGAIISampler: non-dominated sorting and crowding distance select parents,
    uniform crossover and mutation make children; broken constraints use constrained dominance.

    Args:
        population_size: archs per generation.
        crossover_prob: probability that a child is made by crossover rather than copied.
        mutation_prob: per-choice mutation probability; None is Optuna's ``1 / number of choices``.
        max_retries: proposals per ask before falling back to a random unseen arch.
    """

    def __init__(
        self,
        population_size: Annotated[int, Field(ge=2)] = 20,
        crossover_prob: Annotated[float, Field(ge=0, le=1)] = 0.9,
        mutation_prob: Annotated[float, Field(ge=0, le=1)] | None = None,
        max_retries: PositiveInt = 10,
    ) -> None:
        options = {"population_size": population_size, "crossover_prob": crossover_prob, "mutation_prob": mutation_prob}
        super().__init__("nsgaii", options, max_retries)
