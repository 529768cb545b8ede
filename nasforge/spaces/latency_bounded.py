"""A space whose archs all run within a latency bound on a profiled device.

``latency_bounded`` wraps any registered space and keeps only the archs a latency table (or a
cost model fitted on it) predicts at or under ``max_ms``. Because the bound is part of the space,
every component that draws archs from it respects it without knowing about latency: the
strategies' sampling and mutation, the one-shot supernet's training rules (a path over the bound
is never trained) and the runner's check of each proposed arch::

    space:
      type: latency_bounded
      inner: {type: proxyless, small_input: false}
      table: proxyless_cpu.json          # or cost_model: proxyless_cpu.pkl
      max_ms: 6
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import PositiveFloat, PositiveInt

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.core.registry import register
from nasforge.core.space import ConstrainedSpace
from nasforge.hardware.latency import LatencyModel

__all__ = ["LatencyBoundedSpace"]


@register("space", "latency_bounded", tags=("hardware",))
class LatencyBoundedSpace(ConstrainedSpace):
    """``inner``'s archs whose predicted latency is at most ``max_ms`` milliseconds.

    Args:
        inner: the constrained space's config, ``{type: NAME, ...its options}``.
        max_ms: the latency bound (ms, on the table's device).
        table: a latency table JSON from ``nasforge profile`` (sum of blocks plus overhead).
        cost_model: instead of ``table``, a model from ``nasforge costmodel fit``.
        in_channels, num_classes, input_size: the data (filled by the runner, passed to ``inner``).
    """

    #: Values for the required options that `nasforge gen-config` writes as a template.
    example_options: ClassVar[dict[str, Any]] = {"inner": {"type": "nb201", "C": 8, "N": 1}, "table": "latency_table.json", "max_ms": 0.5}

    @staticmethod
    def conformance_options(scratch: Path) -> dict[str, Any]:
        """Tiny settings for the conformance suite (nasforge.testing.suites): a latency table of a
        one-cell NB201 space at 1x8x8, written into ``scratch``."""
        from nasforge.hardware.profile import tiny_nb201_table

        table = tiny_nb201_table(scratch)
        return {"inner": {"type": "nb201", "C": 4, "N": 1}, "max_ms": 1e6, "table": str(table)}

    def __init__(
        self,
        inner: dict[str, Any],
        max_ms: PositiveFloat,
        table: str | None = None,
        cost_model: str | None = None,
        in_channels: PositiveInt | None = None,
        num_classes: PositiveInt | None = None,
        input_size: tuple[PositiveInt, PositiveInt] | None = None,
    ) -> None:
        data = {"in_channels": in_channels, "num_classes": num_classes, "input_size": input_size}
        context = {key: value for key, value in data.items() if value is not None}
        space = registry.create_inner("space", inner, context=context, where="latency_bounded.inner")
        self.latency_model = LatencyModel.load(table, cost_model)
        self.max_ms = float(max_ms)
        fastest = self.latency_model.table.fastest_arch(space.choices())
        if self.latency_model.predict(fastest) > self.max_ms:
            raise ConfigError(
                f"latency_bounded: no arch of {inner['type']!r} fits max_ms={self.max_ms:g}: the fastest by "
                f"{self.latency_model.source} is predicted at {self.latency_model.predict(fastest):.3f} ms"
            )
        super().__init__(space, self.fast_enough, f"the latency bound of {self.max_ms:g} ms ({self.latency_model.source})")

    def fast_enough(self, arch: Arch) -> bool:
        """Whether ``arch``'s predicted latency is within the bound."""
        return self.latency_model.predict(arch) <= self.max_ms
