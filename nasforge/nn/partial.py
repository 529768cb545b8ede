"""Partial-channel mixed ops (PC-DARTS, Xu et al., ICLR 2020, Sec. 3.1).

A :class:`PartialChannelChoice` is a :class:`~nasforge.nn.mixed.MixedOp` whose
candidates are built at ``C / K`` channels: the first ``C / K`` channels of its input go through
the candidates (mixed by the weights set on it, or the one activated), the other ``C - C / K``
bypass them (max-pooled where the edge has stride 2), and the two parts are concatenated and
channel-shuffled in groups of ``K`` so that the next edge samples other channels. The mixed-op
memory and compute therefore drop about ``K``-fold.

Edge normalisation (PC-DARTS' per-node betas) reaches the edge as weights that sum to the edge's
normalised beta (``beta_ij * softmax(alpha_ij)``); the bypassed channels are scaled by the weights'
sum, so the edge's whole output is ``beta_ij * shuffle(cat(mixed, bypass))`` as in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from nasforge.core.arch import Value
from nasforge.nn.mixed import MixedOp

__all__ = ["PartialChannelChoice", "PartialChannelOp", "channel_shuffle", "partial_width"]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: ``(N, g * c, H, W)`` -> channels read ``c`` by ``g`` transposed."""
    n, channels, h, w = x.shape
    return x.view(n, groups, channels // groups, h, w).transpose(1, 2).reshape(n, channels, h, w)


def partial_width(C: int, k: int) -> int:
    """The candidates' width ``C / k`` of a partial-channel edge of width ``C`` (checked to divide)."""
    if C % k:
        raise ValueError(f"partial_channels={k} must divide every edge's channels; {C} is not a multiple of {k}")
    return C // k


def _bypass(stride: int) -> nn.Module:
    # PC-DARTS pools the bypassed channels 2x2 on reduction edges; ceil_mode matches the
    # candidates' padded stride-2 output on odd sizes.
    return nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()


def _merge(x: Tensor, part: Tensor, k: int, bypass: nn.Module, scale: Tensor | None = None) -> Tensor:
    """``shuffle(cat(part, bypass(x's last C - C/k channels) [* scale]))``."""
    rest = bypass(x[:, x.shape[1] // k :])
    if scale is not None:
        rest = scale * rest
    return channel_shuffle(torch.cat([part, rest], dim=1), k)


class PartialChannelChoice(MixedOp):
    """A :class:`MixedOp` over candidates of ``C / k`` channels on a ``C``-channel edge.

    Args:
        name: the choice name.
        candidates: choice value -> module, each built at ``C / k`` channels.
        k: PC-DARTS' ``K`` (1/K of the channels enter the candidates).
        stride: the edge's stride (2 pools the bypassed channels).
    """

    def __init__(self, name: str, candidates: Mapping[Value, nn.Module], k: int, stride: int = 1) -> None:
        super().__init__(name, candidates)
        self.k = k
        self.stride = stride
        self.bypass = _bypass(stride)
        self._path_ops: dict[int, PartialChannelOp] = {}  # plain references: the ops are in self.ops

    def path_op(self, index: int) -> nn.Module:
        """Candidate ``index`` on the whole ``C``-channel input (split, op, bypass, shuffle)."""
        if index not in self._path_ops:
            self._path_ops[index] = PartialChannelOp(self.ops[index], self.k, self.stride)
        return self._path_ops[index]

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        part = super().forward(x[:, : x.shape[1] // self.k])
        weighted = self._chosen is None and self.weights is not None
        return _merge(x, part, self.k, self.bypass, self.weights.sum() if weighted else None)  # type: ignore[union-attr]


class PartialChannelOp(nn.Module):
    """One candidate of a :class:`PartialChannelChoice` on its own: what a supernet path exports.

    Args:
        op: the candidate, of ``C / k`` channels (shared, not copied).
        k: the channel fraction's denominator.
        stride: the edge's stride.
    """

    def __init__(self, op: nn.Module, k: int, stride: int = 1) -> None:
        super().__init__()
        self.op = op
        self.k = k
        self.bypass = _bypass(stride)

    def forward(self, x: Tensor) -> Tensor:
        return _merge(x, self.op(x[:, : x.shape[1] // self.k]), self.k, self.bypass)
