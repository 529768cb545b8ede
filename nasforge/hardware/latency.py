"""An arch's latency on one device, predicted from a latency table or a fitted cost model.

:class:`LatencyModel` is what search components hold when a search is latency-aware: the
``with_latency`` estimator reports its prediction as a metric, the ``latency_bounded`` space
keeps only the archs it predicts under a bound, and ``nasforge train`` measures the final model
on the same device to set the prediction against the measurement (:meth:`LatencyModel.compare`).
A component that holds one exposes it as its ``latency_model`` attribute
(:func:`find_latency_model`).

Example:
    >>> latency = LatencyModel.load(table="proxyless_cpu.json")  # doctest: +SKIP
    >>> latency.predict(arch)  # doctest: +SKIP
    6.1
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.hardware.profile import LatencyTable, measure_model

if TYPE_CHECKING:
    from nasforge.hardware.fitting import FittedCostModel

__all__ = ["LatencyModel", "find_latency_model"]

log = logging.getLogger("nasforge")


@dataclass
class LatencyModel:
    """Predicted latency (ms) of archs on the device a table was profiled on.

    Attributes:
        table: the latency table (blocks, device, input shape).
        cost_model: a cost model fitted on that table (``nasforge costmodel fit``); without one
            the prediction is the table's sum of blocks plus its calibrated overhead.
        source: the file(s) the model came from, for messages.
    """

    table: LatencyTable
    cost_model: FittedCostModel | None = None
    source: str = ""
    _cache: dict[Arch, float] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, table: str | None = None, cost_model: str | None = None) -> LatencyModel:
        """From a table JSON (``nasforge profile``) or a fitted cost model (which holds its table)."""
        if (table is None) == (cost_model is None):
            raise ConfigError(
                "give exactly one latency source: `table` (a JSON from `nasforge profile`) or `cost_model` "
                f"(a file from `nasforge costmodel fit`); got table={table!r}, cost_model={cost_model!r}"
            )
        if cost_model is not None:
            from nasforge.hardware.fitting import FittedCostModel

            fitted = FittedCostModel.load(cost_model)
            return cls(fitted.table, fitted, f"cost model {cost_model} ({fitted.name})")
        assert table is not None
        return cls(LatencyTable.load(table), None, f"latency table {table}")

    @property
    def device(self) -> str:
        """The device the table was measured on (``cpu``, ``cuda``, ...)."""
        return str(self.table.device.get("device", "cpu"))

    def predict(self, arch: Arch) -> float:
        """Predicted latency (ms) of ``arch`` (cached: searches ask again and again)."""
        if arch not in self._cache:
            if self.cost_model is not None:
                self._cache[arch] = float(self.cost_model.predict([arch])[0])
            else:
                self._cache[arch] = self.table.predict(arch)
        return self._cache[arch]

    def measure(self, model: nn.Module, warmup: int = 5, repeats: int = 20) -> float:
        """``model``'s latency (ms) measured as the table was: its device, threads and input shape."""
        return measure_model(model, self.table.input_shape, self.device, warmup, repeats, threads=self.table.threads)

    def compare(self, model: nn.Module, arch: Arch, input_shape: Sequence[int]) -> dict[str, float]:
        """Predicted and measured latency of ``arch``'s trained ``model``, and measured / predicted.

        Returns ``{}`` (and logs why) where the measurement would not be comparable: the table
        was profiled for another input shape, or on a device this machine lacks.
        """
        if list(self.table.input_shape[1:]) != list(input_shape[1:]):
            log.warning(
                "latency not compared: %s was profiled for input %s, the model takes %s",
                self.source, self.table.input_shape, list(input_shape),
            )
            return {}
        try:
            measured = self.measure(model)
        except ConfigError as exc:
            log.warning("latency not compared: %s", exc)
            return {}
        predicted = self.predict(arch)
        metrics = {
            "latency_predicted_ms": predicted,
            "latency_measured_ms": measured,
            "latency_measured_over_predicted": measured / predicted if predicted > 0 else float("nan"),
        }
        log.info(
            "latency on %s: predicted %.3f ms (%s), measured %.3f ms, measured/predicted %.2f",
            self.table.device.get("cpu") if self.device == "cpu" else self.table.device.get("gpu", self.device),
            predicted, self.source, measured, metrics["latency_measured_over_predicted"],
        )
        return metrics


def find_latency_model(*components: Any) -> LatencyModel | None:
    """The latency model of the first component holding one (``latency_model`` attribute), or None."""
    for component in components:
        model = getattr(component, "latency_model", None)
        if isinstance(model, LatencyModel):
            return model
    return None
