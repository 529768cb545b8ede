"""FBNet (Wu et al., CVPR 2019): Gumbel-softmax over each layer's blocks, with a latency-table loss.

Every searchable layer mixes its candidate blocks (in the ``fbnet`` space: 9 blocks in each of
22 layers) by a Gumbel-softmax sample ``m = softmax((theta + g) / tau)``; the architecture
parameters ``theta`` descend

    L(a, w) = CE(a, w) * alpha * log(LAT(a)) ** beta,   LAT(a) = sum_l sum_i m_li * LAT(b_li)

(the paper's eq. 7: the latency of the sampled mixture, a weighted sum of per-block latencies
from a lookup table, so differentiable in ``theta``). The table is a latency table made by
``nasforge profile`` for the space and input size (read as a
:class:`~nasforge.hardware.lut.CostTable`, its overhead the constant term); without one, a FLOPs
table of the space at the data's input size stands in (MFLOPs for milliseconds), so the search
then favours cheaper blocks by computation, not by measured latency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import Tensor

from nasforge.core.capabilities import Capability
from nasforge.core.differentiable import StepKind
from nasforge.core.errors import ConfigError
from nasforge.core.registry import register
from nasforge.hardware.lut import CostTable, build_cost_table, load_cost_table
from nasforge.strategies.alphas import Adam, Fraction
from nasforge.strategies.snas import SNAS

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace

__all__ = ["FBNet", "FBNetAdam"]


class FBNetAdam(Adam):
    """FBNet's settings: lr 0.01, betas (0.9, 0.999), weight decay 5e-4."""

    lr: PositiveFloat = 0.01
    beta1: Fraction = 0.9
    weight_decay: NonNegativeFloat = 5e-4


FBNET_ADAM = FBNetAdam()


@register("strategy", "fbnet", tags=("differentiable",))
class FBNet(SNAS):
    """FBNet's DNAS (Wu et al., CVPR 2019, Sec. 3.3-4.1), see the module docstring for the loss.

    Bilevel: the weights train on 80% of the training split and ``theta`` on the other 20%
    (:attr:`arch_fraction`), after a warm-up of the first ``warmup`` share of the epochs that
    trains the weights only. Temperature ``tau0 * decay ** epoch``. Derivation: each layer's most
    likely block (the paper samples several archs from the final distribution and trains them).
    Defaults are the paper's: 90 epochs, alpha 0.2, beta 0.6, temperature 5.0 decayed by
    ``exp(-0.045)`` per epoch, warm-up 10%, ``theta`` by Adam lr 0.01, weight decay 5e-4. The
    paper's weights use SGD lr 0.1, momentum 0.9, weight decay 1e-4, cosine schedule, no
    clipping: options of the ``dnas`` estimator (``lr``, ``lr_min``, ``weight_decay``,
    ``grad_clip``), see ``configs/fbnet_fbnet.yaml``.

    Args:
        epochs: search epochs.
        latency_table: a JSON table from ``nasforge profile`` for this space and input size;
            None: the FLOPs of the space's blocks at ``input_size``.
        latency_unit: ``LAT`` enters the loss in this unit (of ms, or of FLOPs); None: 1 ms, or
            1e6 FLOPs. Its log must be positive, so the cheapest arch must cost over one unit.
        alpha, beta: the loss' coefficient and exponent.
        tau0, decay: initial temperature and its factor per epoch.
        warmup: share of the epochs, at the start, without architecture steps.
        adam: the optimiser of ``theta``.
        in_channels, input_size: the data's (filled by the runner) for the FLOPs table.
    """

    #: A per-layer latency table cannot price archs derived from edge weights (DARTS cells).
    excludes: ClassVar[frozenset[Capability]] = frozenset({Capability.EDGES})
    bilevel = True
    arch_fraction = 0.2

    def __init__(
        self,
        epochs: PositiveInt = 90,
        latency_table: str | None = None,
        latency_unit: PositiveFloat | None = None,
        alpha: PositiveFloat = 0.2,
        beta: PositiveFloat = 0.6,
        tau0: PositiveFloat = 5.0,
        decay: Annotated[float, Field(gt=0, le=1)] = math.exp(-0.045),
        warmup: Fraction = 0.1,
        adam: FBNetAdam = FBNET_ADAM,
        in_channels: PositiveInt = 3,
        input_size: tuple[PositiveInt, PositiveInt] = (224, 224),
    ) -> None:
        # SNAS' sampling, with FBNet's own schedule and optimiser: exponential decay, Adam, no clipping
        super().__init__(epochs, tau0, optimizer="adam", arch_grad_clip=None, adam=adam)
        self.decay = decay
        self.latency_table = latency_table
        self.latency_unit = latency_unit
        self.alpha, self.beta = alpha, beta
        self.warmup_epochs = round(warmup * epochs)
        self.input_shape = (in_channels, *input_size)
        self._mask: dict[str, Tensor] | None = None  # the last architecture step's sample
        self._table: CostTable | None = None  # built on first use

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        self._table = None
        if self.latency_table is not None and not Path(self.latency_table).is_file():
            raise ConfigError(
                f"fbnet: latency table {self.latency_table} does not exist; make one with `nasforge profile`"
            )

    @property
    def unit(self) -> float:
        """The unit of ``LAT`` in the loss, in the table's unit."""
        if self.latency_unit is not None:
            return self.latency_unit
        return 1.0 if self.latency_table is not None else 1e6

    def table(self) -> CostTable:
        """The per-layer cost table (loaded or counted on first use)."""
        if self._table is None:
            if self.latency_table is not None:
                table = load_cost_table(self.latency_table, self.space, "latency_ms")
            else:
                table = build_cost_table(self.space, "flops", self.input_shape)
            cheapest = table.bounds()[0]
            if cheapest <= self.unit:
                raise ConfigError(
                    f"fbnet: the cheapest arch costs {cheapest / self.unit:.4g} latency units, so log(LAT) would not "
                    f"be positive; set latency_unit below {cheapest:.4g} (the table's unit: {table.metric})"
                )
            self._table = table
        return self._table

    def expected_latency(self, weights: Mapping[str, Tensor] | None = None) -> Tensor:
        """The table's cost under per-layer candidate weights: its constant plus
        ``sum_l sum_i w_li * LAT(b_li)``, in the table's unit, differentiable in the weights;
        default weights: the candidates' probabilities (the table's expectation)."""
        if weights is None:
            weights = {name: torch.softmax(alpha, dim=-1) for name, alpha in self.alphas.items()}
        return self.table().expected(weights).float()

    @property
    def tau(self) -> float:
        return self.tau0 * self.decay**self.epoch

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        out = super().weights(step)
        if step == "arch":
            self._mask = out
        return out

    def loss(self, task_loss: Tensor) -> Tensor:
        """``CE * alpha * log(LAT) ** beta`` with ``LAT`` of the last architecture sample."""
        latency = self.expected_latency(self._mask) / self.unit
        return task_loss * self.alpha * torch.log(latency) ** self.beta

    def searching(self) -> bool:
        return self.epoch >= self.warmup_epochs

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "expected_latency": float(self.expected_latency().detach())}
