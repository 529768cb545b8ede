"""The estimator contract: how an arch gets its metrics (train, look up, predict, share weights)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from nasforge.core.arch import Arch
from nasforge.core.component import Component
from nasforge.core.trial import Result

if TYPE_CHECKING:
    from nasforge.core.capabilities import ArchTraining, Capability
    from nasforge.core.differentiable import ArchParameters
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["Context", "Estimator", "EpochProgress", "check_reported_metrics"]


class EpochProgress(Protocol):
    """``progress(what, done, total, metrics)``: ``done`` of ``total`` epochs of ``what`` (e.g.
    ``"epoch"``, ``"supernet epoch"``, ``"dnas epoch"``) finished, with that epoch's metrics."""

    def __call__(self, what: str, done: int, total: int, metrics: Mapping[str, float]) -> None: ...


@dataclass(frozen=True)
class Context:
    """What the runner hands an estimator.

    Attributes:
        space: the search space being searched.
        data: the task's data splits (``nasforge.tasks.DataSplits``), or None for estimators
            that need no data (tabular benchmarks, predictors).
        seed: for :meth:`Estimator.estimate`, the trial's own seed; else the run's seed.
        device: torch device string (``"cpu"``, ``"cuda"``).
        run_dir: the run directory, for estimators that keep files (caches, supernet weights).
        log: logger to report progress to.
        arch_parameters: the strategy's architecture parameters when it is differentiable
            (DARTS, GDAS, ...), for estimators that train them with the supernet; else None.
        progress: called after every training epoch by estimators that train
            (:class:`EpochProgress`), so a terminal can show a bar; None (the default, and
            always in worker processes): nobody is watching. Estimators never draw anything.
    """

    space: SearchSpace
    data: Any = None
    seed: int = 0
    device: str = "cpu"
    run_dir: Path | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("nasforge"))
    arch_parameters: ArchParameters | None = None
    progress: EpochProgress | None = None

    def report_epoch(self, what: str, done: int, total: int, metrics: Mapping[str, float]) -> None:
        """Call :attr:`progress` if set; a failing progress display never stops training."""
        if self.progress is not None:
            try:
                self.progress(what, done, total, metrics)
            except Exception:  # noqa: BLE001 - a display, not the work
                self.log.debug("progress callback failed", exc_info=True)


class Estimator(Component, ABC):
    """Base of every estimator.

    :meth:`estimate` gives one arch its metrics; raising marks that trial failed (the search goes
    on). :meth:`update` is called once per strategy step by weight-sharing estimators (e.g. one
    epoch of supernet training); stateless estimators leave it alone.

    What an estimator needs is declared in class attributes, which
    :func:`nasforge.core.capabilities.check_combination` checks before any data loads.
    """

    #: Capabilities the space must offer (e.g. ``{Capability.SUPERNET}`` for one-shot estimators).
    requires: ClassVar[frozenset[Capability]] = frozenset()
    #: Supernet modes the space must support (``"weighted"``: candidates mixed by weights).
    modes: ClassVar[frozenset[str]] = frozenset()
    #: How it trains a strategy's architecture parameters (``ctx.arch_parameters``); None: it does not.
    trains_arch_parameters: ClassVar[ArchTraining | None] = None
    #: True when it cannot run without a strategy's architecture parameters (``dnas``).
    needs_arch_parameters: ClassVar[bool] = False
    #: False when trials cannot run in parallel worker processes because the runner must update
    #: shared state between them (:meth:`update` trains a supernet: ``supernet``, ``ofa``,
    #: ``dnas``); an executor with several workers refuses it with this reason.
    parallel_trials: ClassVar[bool] = True
    #: True for a wrapper whose needs are those of the estimator it holds (``self.inner``).
    forwards_capabilities: ClassVar[bool] = False
    #: The metrics every :meth:`estimate` reports; None: not known before it runs (an external
    #: command printing JSON). Estimators whose metrics depend on their options override
    #: :meth:`reported_metrics` instead.
    reports: ClassVar[frozenset[str] | None] = None
    #: The space (a ``{type, ...}`` section) the conformance suites run it on; None: a tiny NB201.
    conformance_space: ClassVar[Mapping[str, Any] | None] = None
    #: The strategy (a section) whose architecture parameters it trains in the suites, if it needs one.
    conformance_strategy: ClassVar[Mapping[str, Any] | None] = None

    def reported_metrics(self) -> frozenset[str] | None:
        """The metrics this estimator reports for every arch, given its options (None: unknown,
        so objectives are not checked against it). Wrappers add theirs to their inner one's."""
        return type(self).reports

    @abstractmethod
    def estimate(self, arch: Arch, ctx: Context) -> Result:
        """Measure ``arch``; deterministic given ``ctx.seed``."""

    def update(self, ctx: Context) -> None:
        """Optional training step of shared state (supernet weights, predictor refits)."""

    def state_dict(self) -> dict[str, Any]:
        """State needed to resume (empty for stateless estimators)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""


def check_reported_metrics(estimator: Estimator, objective: Objective) -> None:
    """Raise a ConfigError, before anything trains, when ``objective`` (its scores or constraints)
    reads a metric ``estimator`` does not report; estimators whose metrics are unknown pass."""
    from nasforge.core.errors import ConfigError

    reported = estimator.reported_metrics()
    if reported is None:
        return
    for metric in objective.required_metrics():
        if metric not in reported:
            import difflib

            close = difflib.get_close_matches(metric, sorted(reported), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"the objective reads metric {metric!r}, which estimator {type(estimator).__name__} does not report."
                f"{hint} It reports: {', '.join(sorted(reported))}."
            )
