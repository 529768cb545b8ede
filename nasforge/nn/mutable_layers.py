"""The value layers of :mod:`nasforge.nn.mutables`: ``Conv2d``, ``Linear``, ``BatchNorm2d`` and
``Dropout`` taking :class:`~nasforge.nn.values.ValueChoice` values (or values derived from them)
where torch takes numbers. Sizes allocate the largest value and run a slice of it (OFA-style
weight sharing: a width-16 pick uses the first 16 filters, a 3x3 kernel the centre of the 7x7
one); each freezes to the plain torch layer it computes, weights included.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import skip_init

from nasforge.nn.mutables import ValueLayer, _largest, _now, _only_choices, filled
from nasforge.nn.values import ValueChoice, ValueExpr

__all__ = ["Conv2d", "Linear", "BatchNorm2d", "Dropout"]


class Conv2d(nn.Conv2d, ValueLayer):
    """``nn.Conv2d`` whose channels and (odd) kernel size may be ValueChoices (or values derived
    from them, ``width * 2``).

    ``groups`` is an int, or the ``in_channels`` choice itself (or the same expression of it) for
    a depthwise conv (one filter per channel, whatever the width); ``padding="same"`` pads ``dilation * (kernel // 2)`` for
    whichever kernel is picked.
    """

    def __init__(
        self,
        in_channels: int | ValueExpr,
        out_channels: int | ValueExpr,
        kernel_size: int | ValueExpr,
        stride: int = 1,
        padding: int | Literal["same"] = 0,
        dilation: int = 1,
        groups: int | ValueExpr = 1,
        bias: bool = True,
    ) -> None:
        depthwise = isinstance(groups, ValueExpr)
        if not depthwise and (not isinstance(groups, int) or groups < 1):
            raise ValueError(f"Conv2d: groups must be a positive int or in_channels itself (depthwise); got {groups!r}")
        if depthwise and repr(groups) != repr(in_channels):
            raise ValueError("Conv2d: a choice as groups must be in_channels itself (a depthwise conv)")
        if not depthwise and any(int(c) % int(groups) for v in (in_channels, out_channels) for c in _values(v)):
            raise ValueError(f"Conv2d: every in/out channel count must be a multiple of groups={groups}")
        big_in = _largest(in_channels)
        super().__init__(
            big_in,
            _largest(out_channels),
            _largest(kernel_size),
            stride,
            0,
            dilation,
            big_in if depthwise else groups,
            bias=bias,
        )
        if any(int(k) % 2 == 0 for k in _values(kernel_size)) and isinstance(kernel_size, ValueExpr):
            raise ValueError(f"Conv2d: kernel sizes of {kernel_size!r} must be odd to share one centred kernel")
        self.in_choice, self.out_choice, self.kernel_choice = in_channels, out_channels, kernel_size
        self.groups_choice = groups
        self.pad = padding

    def value_choices(self) -> list[ValueChoice]:
        return _only_choices(self.in_choice, self.out_choice, self.kernel_choice)

    def _sliced(self) -> tuple[Tensor, Tensor | None, int, int, int]:
        cin, cout, k, groups = (
            _now(self.in_choice),
            _now(self.out_choice),
            _now(self.kernel_choice),
            _now(self.groups_choice),
        )
        start = (self.kernel_size[0] - k) // 2
        weight = self.weight[:cout, : cin // groups, start : start + k, start : start + k]
        bias = self.bias[:cout] if self.bias is not None else None
        padding = self.dilation[0] * (k // 2) if self.pad == "same" else int(self.pad)
        return weight, bias, k, padding, groups

    def forward(self, x: Tensor) -> Tensor:
        weight, bias, _, padding, groups = self._sliced()
        return F.conv2d(x, weight, bias, self.stride, padding, self.dilation, groups)

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        weight, bias, k, padding, groups = self._sliced()
        conv = skip_init(
            nn.Conv2d,
            weight.shape[1] * groups,
            weight.shape[0],
            k,
            self.stride,
            padding,
            self.dilation,
            groups,
            bias=bias is not None,
        )
        return filled(conv, {"weight": weight, "bias": bias}, self.training)


def _values(value: object) -> list[Any]:
    return value.candidates() if isinstance(value, ValueExpr) else [value]


class Linear(nn.Linear, ValueLayer):
    """``nn.Linear`` whose widths may be ValueChoices (the leading slice of the largest)."""

    def __init__(self, in_features: int | ValueExpr, out_features: int | ValueExpr, bias: bool = True) -> None:
        super().__init__(_largest(in_features), _largest(out_features), bias=bias)
        self.in_choice, self.out_choice = in_features, out_features

    def value_choices(self) -> list[ValueChoice]:
        return _only_choices(self.in_choice, self.out_choice)

    def _sliced(self) -> tuple[Tensor, Tensor | None]:
        cin, cout = _now(self.in_choice), _now(self.out_choice)
        return self.weight[:cout, :cin], self.bias[:cout] if self.bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self._sliced())

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        weight, bias = self._sliced()
        linear = skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None)
        return filled(linear, {"weight": weight, "bias": bias}, self.training)


class BatchNorm2d(nn.BatchNorm2d, ValueLayer):
    """``nn.BatchNorm2d`` whose width may be a ValueChoice: parameters and running statistics are
    the leading slice of the largest (updated in place, so the supernet keeps them); ``affine``
    as in torch."""

    def __init__(
        self, num_features: int | ValueExpr, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True
    ) -> None:
        super().__init__(_largest(num_features), eps, momentum, affine)
        self.features_choice = num_features

    def value_choices(self) -> list[ValueChoice]:
        return _only_choices(self.features_choice)

    def channels(self) -> int:
        """The width in use (subclasses with other width objects override it)."""
        return _now(self.features_choice)

    def _slices(self) -> dict[str, Tensor]:
        c = self.channels()
        return {
            "weight": self.weight[:c] if self.affine else None,  # type: ignore[dict-item]
            "bias": self.bias[:c] if self.affine else None,  # type: ignore[dict-item]
            "running_mean": self.running_mean[:c],  # type: ignore[index]
            "running_var": self.running_var[:c],  # type: ignore[index]
            "num_batches_tracked": self.num_batches_tracked,  # type: ignore[dict-item]
        }

    def forward(self, x: Tensor) -> Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
            if self.momentum is None:  # a cumulative average (batch-norm recalibration)
                factor = 1.0 / float(self.num_batches_tracked)  # type: ignore[arg-type]
        s = self._slices()
        return F.batch_norm(
            x, s["running_mean"], s["running_var"], s["weight"], s["bias"], self.training, factor, self.eps
        )

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        bn = skip_init(nn.BatchNorm2d, self.channels(), self.eps, self.momentum, self.affine)
        return filled(bn, self._slices(), self.training)


class Dropout(nn.Dropout, ValueLayer):
    """``nn.Dropout`` whose rate ``p`` may be a float ValueChoice (e.g. ``[0.0, 0.2, 0.5]``)."""

    def __init__(self, p: float | ValueExpr = 0.5, inplace: bool = False) -> None:
        rates = _values(p)
        if not all(0 <= float(r) <= 1 for r in rates):
            raise ValueError(f"Dropout: rates must be in [0, 1], got {rates}")
        super().__init__(0.5, inplace)
        self.p_choice = p

    @property
    def p(self) -> float:  # type: ignore[override]
        return float(_now(self.p_choice))

    @p.setter
    def p(self, value: float) -> None:
        pass  # nn.Dropout's constructor sets it; the rate is the choice's

    def value_choices(self) -> list[ValueChoice]:
        return _only_choices(self.p_choice)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, self.inplace)

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        return nn.Dropout(self.p, self.inplace).train(self.training)
