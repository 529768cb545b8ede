"""An estimator wrapper adding a predicted latency: a profiled table (``nasforge profile``) or a
cost model fitted on it (``nasforge costmodel fit``).

With it a search can bound latency as a constraint of the objective (the strategy still proposes
slow archs; they are scored infeasible)::

    estimator:
      type: with_latency
      inner: {type: nb201_table, devices: []}
      table: nb201_cpu.json                 # or cost_model: nb201_cpu.pkl
    objective: {type: single, metric: val_acc, constraints: [{metric: latency_ms, max: 5}]}

For a bound no proposed arch may cross (one-shot searches: not even trained in the supernet),
use the ``latency_bounded`` space instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.estimator import Context, Estimator
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace
from nasforge.core.trial import Result
from nasforge.hardware.latency import LatencyModel

__all__ = ["WithLatency"]


@register("estimator", "with_latency")
class WithLatency(Estimator):
    """Runs another estimator and adds ``metric``: the arch's predicted latency.

    Args:
        inner: the wrapped estimator's config, ``{type: NAME, ...its options}``.
        table: path of a latency table JSON written by ``nasforge profile``.
        cost_model: instead of ``table``, a cost model written by ``nasforge costmodel fit``.
        metric: name of the added metric (milliseconds).
        space: the search space (offered by the runner; passed on to ``inner``).
    """

    #: Values for the required options that `nasforge gen-config` writes as a template.
    example_options: ClassVar[dict[str, Any]] = {"inner": {"type": "supernet"}, "table": "latency_table.json"}
    #: Its needs (capabilities, architecture parameters) are the inner estimator's.
    forwards_capabilities: ClassVar[bool] = True

    @staticmethod
    def conformance_options(scratch: Path) -> dict[str, Any]:
        """Tiny settings for the conformance suite (nasforge.testing.suites): a latency table of a
        one-cell NB201 space at 1x8x8, written into ``scratch``."""
        from nasforge.hardware.profile import tiny_nb201_table

        table = tiny_nb201_table(scratch)
        return {"inner": {"type": "scratch", "epochs": 1, "batch_size": 32}, "table": str(table)}

    def __init__(
        self,
        inner: dict[str, Any],
        table: str | None = None,
        cost_model: str | None = None,
        metric: str = "latency_ms",
        space: SearchSpace | None = None,
    ) -> None:
        context = {"space": space} if space is not None else {}
        self.inner: Estimator = registry.create_inner("estimator", inner, context=context, where="with_latency.inner")
        self.latency_model = LatencyModel.load(table, cost_model)
        self.metric = metric

    def reported_metrics(self) -> frozenset[str] | None:
        """The inner estimator's metrics and ``metric`` (None when the inner one's are unknown)."""
        inner = self.inner.reported_metrics()
        return None if inner is None else inner | {self.metric}

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        result = self.inner.estimate(arch, ctx)
        metrics = {**result.metrics, self.metric: self.latency_model.predict(arch)}
        return Result(metrics=metrics, cost=result.cost, extras=result.extras)

    def update(self, ctx: Context) -> None:
        self.inner.update(ctx)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
