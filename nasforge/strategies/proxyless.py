"""ProxylessNAS (Cai, Zhu & Han, ICLR 2019), the strategy: binarised paths, two sampled candidates per architecture step.

Followed: ``search/modules/mix_op.py`` and ``search/nas_manager.py`` of github.com/mit-han-lab/proxylessnas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor

from nasforge.core.differentiable import StepKind
from nasforge.core.errors import ConfigError
from nasforge.core.registry import register

if TYPE_CHECKING:
    from nasforge.core.objective import Objective
    from nasforge.core.space import SearchSpace
from nasforge.strategies.alphas import PROXYLESS_ADAM, DifferentiableStrategy, ProxylessAdam

__all__ = ["ProxylessNAS"]


@register("strategy", "proxyless", tags=("differentiable",))
class ProxylessNAS(DifferentiableStrategy):
    """ProxylessNAS (Cai, Zhu & Han, ICLR 2019), binarised path sampling.

    Weight steps train one path per edge, sampled from ``softmax(alpha)``. Architecture steps
    sample two candidates per edge without replacement, gate one of them by ``softmax`` of
    their two alphas, and estimate the gradient of both alphas by the BinaryConnect rule
    ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)`` (the straight-through weights here give
    exactly it). Memory is one path's, as in the paper: the other candidates never run, and the
    sampled but closed one (weight 0 carrying a gradient) runs without an autograd graph, its
    output kept only for ``dL/dg`` (:class:`~nasforge.nn.mixed.MixedOp`). After each
    update the two alphas are shifted by a common offset that keeps their summed ``exp`` as it
    was, so the unsampled candidates' probabilities do not move (the paper's code). With a
    per-op ``latency`` table, the architecture loss is
    ``alpha * CE * (log E[latency] / log reference) ** beta`` (the paper's ``mul#log`` loss,
    alpha 0.2, beta 0.3), the expected latency summing ``softmax(alpha)``-weighted costs over
    the edges. As in the paper's code: 40 warm-up epochs training the weights only, then 120
    epochs of search with one architecture step every 5 weight steps; Adam lr 1e-3, betas
    (0, 0.999), no weight decay.

    Args:
        epochs: all epochs, warm-up included.
        warmup: the first epochs, weights only (fewer than ``epochs``).
        arch_every: weight steps per architecture step while searching.
        latency: cost of each candidate value (ms, or any unit); None for no latency loss.
        reference: the target expected latency (same unit, above 1 so its log is positive);
            required with ``latency``. The ratio of logs is floored at 1e-6 (costs below 1 unit).
    """

    def __init__(
        self,
        epochs: PositiveInt = 160,
        warmup: NonNegativeInt = 40,
        arch_every: PositiveInt = 5,
        latency: dict[str, PositiveFloat] | None = None,
        reference: Annotated[float, Field(gt=1)] | None = None,
        alpha: PositiveFloat = 0.2,
        beta: PositiveFloat = 0.3,
        adam: ProxylessAdam = PROXYLESS_ADAM,
    ) -> None:
        super().__init__(epochs, adam)
        if warmup >= epochs:
            raise ConfigError(f"proxyless: warmup {warmup} must be below epochs {epochs}, or no architecture step runs")
        self.warmup = warmup
        self.arch_every = arch_every
        self.latency = dict(latency) if latency is not None else None
        self.reference = reference
        self.alpha = alpha
        self.beta = beta
        self._sampled: dict[str, tuple[Tensor, Tensor]] = {}  # edge -> (pair, its alphas before the step)

    def setup(self, space: SearchSpace, objective: Objective, *, seed: int) -> None:
        super().setup(space, objective, seed=seed)
        if self.latency is not None:
            if self.reference is None:
                raise ConfigError("proxyless: a latency table needs a reference latency (the target, above 1)")
            missing = sorted({str(c) for choice in self.edges.values() for c in choice.candidates} - set(self.latency))
            if missing:
                raise ConfigError(f"proxyless: the latency table has no cost for candidate(s) {', '.join(missing)}")

    def searching(self) -> bool:
        return self.epoch >= self.warmup

    def weights(self, step: StepKind) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        self._paths = {}
        self._sampled = {}
        for name, alpha in self.alphas.items():
            probs = torch.softmax(alpha.detach(), dim=-1).double().numpy()
            if step == "weights":
                index = int(self.rng.choice(len(probs), p=probs / probs.sum()))
                gate = torch.zeros(len(probs))
                gate[index] = 1.0
                out[name], self._paths[name] = gate, [index]
                continue
            pair = torch.as_tensor(self.rng.choice(len(probs), size=2, replace=False, p=probs / probs.sum()))
            pair_probs = torch.softmax(alpha[pair], dim=-1)
            first = float(pair_probs[0].detach())
            active = int(self.rng.random() >= first)  # candidate 0 with probability pair_probs[0]
            hard = torch.zeros(2)
            hard[active] = 1.0
            out[name] = torch.zeros(len(probs)).index_put((pair,), hard - pair_probs.detach() + pair_probs)
            self._paths[name] = [int(i) for i in pair]
            self._sampled[name] = (pair, alpha.detach()[pair].clone())
        return out

    def step(self) -> None:
        super().step()
        with torch.no_grad():
            for name, (pair, before) in self._sampled.items():
                alpha = self.alphas[name]
                alpha[pair] -= torch.logsumexp(alpha[pair], 0) - torch.logsumexp(before, 0)
        self._sampled = {}

    def expected_latency(self) -> Tensor:
        """Sum over edges of ``softmax(alpha)``-weighted candidate costs (differentiable)."""
        assert self.latency is not None
        total = torch.zeros(())
        for name, alpha in self.alphas.items():
            costs = torch.tensor([self.latency[str(c)] for c in self.edges[name].candidates])
            total = total + (torch.softmax(alpha, dim=-1) * costs).sum()
        return total

    def loss(self, task_loss: Tensor) -> Tensor:
        if self.latency is None:
            return task_loss
        assert self.reference is not None
        ratio = (torch.log(self.expected_latency()) / np.log(self.reference)).clamp_min(1e-6)
        return self.alpha * task_loss * ratio**self.beta

    def snapshot(self) -> dict[str, Any]:
        extra = {"expected_latency": float(self.expected_latency())} if self.latency is not None else {}
        return {**super().snapshot(), **extra}
