"""BANANAS: Bayesian optimisation with a neural predictor (White et al., 2021, "BANANAS: Bayesian
Optimization with Neural Architectures for Neural Architecture Search", AAAI).

Each round fits an ensemble of small nets on the path encoding of every arch evaluated so far,
proposes candidates by mutating the best of them (plus random ones), scores the candidates with
an acquisition function over the ensemble's mean and spread, and asks the best few. Independent
Thompson sampling (ITS), the paper's choice, is the default.

Where the defaults differ from the paper, NAS-Bench-201 (CIFAR-10, 12-epoch signal) decided:
the ensemble members train on bootstrap resamples (see ``MLPEnsemble``), the candidate pool is
larger (1,000: every one-choice neighbour of the 10 best archs, two-choice mutants of them, and
30% uniform draws), and the nets are smaller and trained for fewer steps, which keeps a
150-query search to a few seconds on one CPU core. Through ``run_search`` on the NB201 table it
reaches 94.28 ± 0.20 mean CIFAR-10 test accuracy at 150 queries over 100 seeds (regularized
evolution: 94.14 ± 0.27; see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveInt

from nasforge.core.arch import Arch
from nasforge.core.registry import create, register
from nasforge.core.space import ENUMERATE_LIMIT
from nasforge.core.strategy import PendingPolicy, Strategy
from nasforge.core.trial import Trial
from nasforge.predictors.encodings import Encoder, EncodingName, get_encoder

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["Bananas"]

Acquisition = Literal["its", "ucb", "ei", "mean"]


@register("strategy", "bananas", tags=("predictor-based",))
class Bananas(Strategy):
    """Predictor-guided search in the style of BANANAS.

    The first ``initial`` archs are random. Then, whenever its queue is empty, the strategy fits
    the predictor on every told trial, generates ``candidates`` unseen archs (every one-choice
    neighbour of the ``parents`` best archs, then two-choice mutants of them, and a
    ``random_share`` of uniform draws), and queues the ``batch`` best by the acquisition
    function. An arch is never asked twice. Failed or infeasible trials are
    fitted at the worst value seen so the predictor learns to avoid them.

    The state is the told history, the queue and the generator: a restored search refits the
    same predictors with the same seeds and continues exactly as it would have.

    Args:
        predictor: registered predictor (``mlp_ensemble`` is BANANAS' own).
        predictor_options: options of the predictor (its ``seed`` is set by the strategy).
        encoding: arch encoding; ``auto`` is the path encoding for cell spaces, else one-hot.
        initial: random archs before the first fit.
        batch: archs asked per fit.
        candidates: archs scored by the acquisition function per fit.
        parents: how many of the best archs are mutated into candidates.
        random_share: share of candidates drawn uniformly instead of by mutation.
        acquisition: ``its`` (independent Thompson sampling), ``ucb`` (mean + ``exploration`` *
            std), ``ei`` (expected improvement) or ``mean`` (greedy). Predictors without an
            uncertainty estimate always use ``mean``.
        exploration: the UCB weight of the standard deviation.
    """

    #: Constant liar: archs in flight join the predictor's training set with the worst value told
    #: so far (:meth:`~nasforge.core.strategy.Strategy.lies`) until their real values come.
    pending_policy: ClassVar[PendingPolicy] = "constant_liar"

    def __init__(
        self,
        predictor: str = "mlp_ensemble",
        predictor_options: dict[str, Any] | None = None,
        encoding: EncodingName = "auto",
        initial: PositiveInt = 10,
        batch: PositiveInt = 5,
        candidates: PositiveInt = 1000,
        parents: PositiveInt = 10,
        random_share: Annotated[float, Field(ge=0, le=1)] = 0.3,
        acquisition: Acquisition = "its",
        exploration: Annotated[float, Field(ge=0)] = 1.0,
    ) -> None:
        self.predictor = predictor
        self.predictor_options = dict(predictor_options or {})
        create("predictor", predictor, self.predictor_options)  # fail early on a bad name or option
        self.encoding = encoding
        self.initial = initial
        self.batch = batch
        self.candidates = candidates
        self.parents = parents
        self.random_share = random_share
        self.acquisition: Acquisition = acquisition
        self.exploration = exploration

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        if objective.n_objectives != 1:
            raise ValueError(
                f"bananas optimises one objective; this one has {objective.n_objectives}: {objective.names}"
            )
        self._encoder: Encoder = get_encoder(self.encoding, space)
        self._names = list(space.choices())
        self._sizes = np.array([len(c) for c in space.choices().values()])
        self._candidates_of = [c.candidates for c in space.choices().values()]
        self._told: list[tuple[Arch, float]] = []  # -inf for failed or infeasible trials
        self._queue: list[Arch] = []
        self._asked = 0

    # -- proposal -----------------------------------------------------------------------------

    def _arch(self, row: np.ndarray) -> Arch:
        return Arch(zip(self._names, (c[i] for c, i in zip(self._candidates_of, row, strict=True)), strict=True))

    def _fresh(self, archs: list[Arch], limit: int, exclude: set[Arch] | None = None) -> list[Arch]:
        """Up to ``limit`` distinct, valid archs from ``archs``, in order, new to the history and
        not excluded."""
        out: list[Arch] = []
        taken = set(exclude or ())
        for arch in archs:
            if len(out) == limit:
                break
            if self.is_new(arch) and arch not in taken and self.space.is_valid(arch):
                out.append(arch)
                taken.add(arch)
        return out

    def _random(self, n: int, exclude: set[Arch] | None = None) -> list[Arch]:
        """``n`` unseen archs drawn uniformly (fewer only when the space runs out)."""
        exclude = set(exclude or ())
        found = self._fresh([self.space.sample(self.rng) for _ in range(2 * n + 10)], n, exclude)
        if len(found) < n and self.space.size() <= ENUMERATE_LIMIT:
            exclude.update(found)
            unseen = [a for a in self.space.enumerate() if self.is_new(a) and a not in exclude]
            found += [unseen[i] for i in self.rng.permutation(len(unseen))[: n - len(found)]]
        return found

    def _mutations(self, n: int) -> list[Arch]:
        """Every one-choice neighbour of the best told archs (best parent first), then random
        two-choice mutants of them up to ``n`` archs (seen ones are filtered out later)."""
        ranked = sorted(range(len(self._told)), key=lambda i: -self._told[i][1])
        parents = self._encoder.indices([self._told[i][0] for i in ranked[: self.parents]])
        mutable = np.flatnonzero(self._sizes > 1)
        if not len(mutable):
            return []
        cols = np.concatenate([np.full(self._sizes[c] - 1, c) for c in mutable])
        shifts = np.concatenate([np.arange(1, self._sizes[c]) for c in mutable])
        rows = np.repeat(parents, len(cols), axis=0)
        at = np.tile(np.arange(len(cols)), len(parents))
        _shift(rows, cols[at], shifts[at], self._sizes)
        extra = max(n - len(rows), 0)
        if extra:
            more = parents[self.rng.integers(len(parents), size=extra)]
            for _ in range(2):
                which = mutable[self.rng.integers(len(mutable), size=extra)]
                _shift(more, which, self.rng.integers(1, self._sizes[which]), self._sizes)
            rows = np.concatenate([rows, more])
        return [self._arch(row) for row in rows]

    def _propose(self) -> list[Arch]:
        """Fit the predictor on the history and pick the next batch by the acquisition function."""
        told = self._told + self.lies()  # archs in flight count as the worst value (constant liar)
        values = np.array([v for _, v in told])
        finite = np.isfinite(values)
        values[~finite] = values[finite].min()
        options = {**self.predictor_options, "seed": int(self.rng.integers(2**31))}
        model = create("predictor", self.predictor, options)
        model.fit(self._encoder([a for a, _ in told]), values)

        n_mutants = self.candidates - int(round(self.random_share * self.candidates))
        pool = self._fresh(self._mutations(n_mutants), n_mutants)
        pool += self._random(self.candidates - len(pool), exclude=set(pool))
        if len(pool) <= self.batch:
            return pool
        X = self._encoder(pool)
        if self.acquisition == "mean" or not model.has_uncertainty:
            score = model.predict(X)
        else:
            mean, std = model.predict_dist(X)
            if self.acquisition == "its":
                score = self.rng.normal(mean, std)
            elif self.acquisition == "ucb":
                score = mean + self.exploration * std
            else:
                score = _expected_improvement(mean, std, float(values.max()))
        order = np.argsort(-score, kind="stable")[: self.batch]
        return [pool[i] for i in order]

    # -- ask / tell ---------------------------------------------------------------------------

    def ask(self) -> Arch | None:
        if not self._queue:
            ready = self._asked >= self.initial and sum(np.isfinite(v) for _, v in self._told) >= 2
            self._queue = self._propose() if ready else self._random(1)
            if not self._queue:
                return None
        self._asked += 1
        return self._queue.pop(0)

    def tell(self, trial: Trial) -> None:
        self._told.append((trial.arch, trial.value))

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "told": [[a.to_dict(), v if math.isfinite(v) else None] for a, v in self._told],
            "queue": [a.to_dict() for a in self._queue],
            "asked": self._asked,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._told = [(Arch(a), float("-inf") if v is None else float(v)) for a, v in state["told"]]
        self._queue = [Arch(a) for a in state["queue"]]
        self._asked = int(state["asked"])


def _shift(rows: np.ndarray, cols: np.ndarray, shifts: np.ndarray, sizes: np.ndarray) -> None:
    """In place: move row ``i``'s candidate index of choice ``cols[i]`` on by ``shifts[i]`` (cyclically)."""
    at = np.arange(len(rows))
    rows[at, cols] = (rows[at, cols] + shifts) % sizes[cols]


def _expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """Expected improvement over ``best`` of Gaussian predictions (maximising)."""
    from scipy.stats import norm

    std = np.maximum(std, 1e-12)
    z = (mean - best) / std
    return std * (z * norm.cdf(z) + norm.pdf(z))
