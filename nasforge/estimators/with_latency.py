"""An estimator wrapper adding a latency predicted from a profiled table (``nasforge profile``).

With it a search can bound latency as a hard constraint::

    estimator:
      type: with_latency
      inner: {type: nb201_table, devices: []}
      table: nb201_cpu.json
    objective: {type: single, metric: val_acc, constraints: [{metric: latency_ms, max: 5}]}
"""

from __future__ import annotations

from typing import Any

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace
from nasforge.core.trial import Result
from nasforge.hardware.profile import LatencyTable

__all__ = ["WithLatency"]


@register("estimator", "with_latency")
class WithLatency(Estimator):
    """Runs another estimator and adds ``metric``: the arch's latency predicted by a table.

    Args:
        inner: the wrapped estimator's config, ``{type: NAME, ...its options}``.
        table: path of a latency table JSON written by ``nasforge profile``.
        metric: name of the added metric (milliseconds).
        space: the search space (offered by the runner; passed on to ``inner``).
    """

    def __init__(
        self, inner: dict[str, Any], table: str, metric: str = "latency_ms", space: SearchSpace | None = None
    ) -> None:
        options = dict(inner)
        name = options.pop("type", None)
        if not isinstance(name, str):
            raise ConfigError("with_latency: `inner` needs `type`, the registered name of the wrapped estimator")
        context = {"space": space} if space is not None else {}
        self.inner: Estimator = registry.create("estimator", name, options, context=context, where="with_latency.inner")
        self.table = LatencyTable.load(table)
        self.metric = metric

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        result = self.inner.estimate(arch, ctx)
        metrics = {**result.metrics, self.metric: self.table.predict(arch)}
        return Result(metrics=metrics, cost=result.cost, extras=result.extras)

    def update(self, ctx: Context) -> None:
        self.inner.update(ctx)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
