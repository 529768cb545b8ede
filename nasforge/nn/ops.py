"""Primitive operations and the named candidate-op table shared by the cell-based spaces.

Every op is a plain ``nn.Module`` whose ``forward`` has no data-dependent Python control flow,
so any network built from them can be traced by ``torch.fx.symbolic_trace`` and exported as
code that runs without nasforge. The definitions follow NAS-Bench-201 (Dong & Yang, ICLR 2020)
and DARTS (Liu et al., ICLR 2019): convolutions carry no bias, and batch norm follows every
convolution.

:data:`OPS` maps an op name to a factory ``(C_in, C_out, stride, *, affine,
track_running_stats) -> nn.Module``. Spaces refer to ops by these names; adding a family of ops
means adding entries to the table. The names shared by NB201 and DARTS (``none``,
``skip_connect``, ``avg_pool_3x3``, ``max_pool_3x3``) are the same op in both papers' code.
DARTS adds separable (``sep_conv_kxk``) and dilated (``dil_conv_kxk``) convolutions; the
cells found by earlier searches that the DARTS papers compare with (NASNet, AmoebaNet) also use
``sep_conv_7x7`` and ``conv_7x1_1x7``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from nasforge.nn.blocks import MBConv

__all__ = [
    "ReLUConvBN",
    "Zero",
    "FactorizedReduce",
    "ResNetBasicBlock",
    "DilConv",
    "SepConv",
    "AsymmetricConv",
    "OpFactory",
    "OPS",
]


class ReLUConvBN(nn.Sequential):
    """ReLU, then a bias-free convolution, then batch norm (NB201's ``nor_conv_kxk``).

    Args:
        C_in: input channels.
        C_out: output channels.
        kernel_size: convolution kernel size.
        stride: convolution stride.
        padding: zero padding on each side.
        dilation: convolution dilation.
        affine: whether batch norm has a learnable scale and shift.
        track_running_stats: whether batch norm keeps running statistics for eval mode.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)


class Zero(nn.Module):
    """The ``none`` op: an all-zero output of ``C_out`` channels, spatially reduced by ``stride``.

    Computed as ``x * 0`` on the (strided) input rather than with ``torch.zeros(shape)``, so the
    output's shape, dtype and device follow the input and the op traces with ``torch.fx``.
    """

    def __init__(self, C_in: int, C_out: int, stride: int = 1) -> None:
        super().__init__()
        self.C_in = C_in
        self.C_out = C_out
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.C_in == self.C_out:
            return x.mul(0.0)
        return x[:, :1].mul(0.0).repeat(1, self.C_out, 1, 1)

    def extra_repr(self) -> str:
        return f"C_in={self.C_in}, C_out={self.C_out}, stride={self.stride}"


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing pixels: ReLU, two 1x1 stride-2 convolutions on the
    input and on the input shifted by one pixel, channels concatenated, then batch norm.

    The shifted branch pads one row and column at the far edge first, so odd sizes work too.
    This is what ``skip_connect`` becomes when it has to reduce (as in NB201 and DARTS).
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_a = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        self.pad = nn.ConstantPad2d((0, 1, 0, 1), 0.0)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = self.pad(x)[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_a(x), self.conv_b(shifted)], dim=1))


class ResNetBasicBlock(nn.Module):
    """NB201's residual block between stages: two 3x3 ReLUConvBN on the main path, the first
    with ``stride``; the shortcut is a 2x2 average pool then a bias-free 1x1 convolution when
    reducing, a 1x1 ReLUConvBN when only the width changes, and the identity otherwise.

    The pool rounds up (``ceil_mode``) as the strided 3x3 convolution does, so an odd size
    ``H`` gives ``ceil(H / 2)`` on both paths (the last window averages the one row or column
    left); on even sizes this is NB201's block exactly, with the same parameters and FLOPs.
    """

    def __init__(
        self, C_in: int, C_out: int, stride: int = 2, affine: bool = True, track_running_stats: bool = True
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicBlock stride must be 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, 1, affine, track_running_stats)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, 1, affine, track_running_stats)
        self.shortcut: nn.Module
        if stride == 2:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True),
                nn.Conv2d(C_in, C_out, kernel_size=1, stride=1, padding=0, bias=False),
            )
        elif C_in != C_out:
            self.shortcut = ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track_running_stats)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class DilConv(nn.Sequential):
    """ReLU, a depthwise convolution, a pointwise (1x1) convolution, then batch norm.

    With ``dilation=2`` it is DARTS' ``dil_conv_kxk``; with ``dilation=1`` it is one half of
    :class:`SepConv`.

    Args:
        C_in: input channels.
        C_out: output channels.
        kernel_size: depthwise kernel size.
        stride: depthwise stride.
        padding: depthwise zero padding on each side.
        dilation: depthwise dilation.
        affine: whether batch norm has a learnable scale and shift.
        track_running_stats: whether batch norm keeps running statistics for eval mode.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int = 1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.depthwise = nn.Conv2d(
            C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in, bias=False
        )
        self.pointwise = nn.Conv2d(C_in, C_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)


class SepConv(nn.Sequential):
    """DARTS' ``sep_conv_kxk``: two stacked ReLU-depthwise-pointwise-BN blocks (:class:`DilConv`
    without dilation); only the first has ``stride``, only the second changes the width.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.first = DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine, track_running_stats)
        self.second = DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine, track_running_stats)


class AsymmetricConv(nn.Sequential):
    """``conv_7x1_1x7`` of NASNet and AmoebaNet cells: ReLU, a ``1xk`` then a ``kx1``
    convolution (each striding along its own axis), then batch norm.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.relu = nn.ReLU(inplace=False)
        self.conv_1xk = nn.Conv2d(C_in, C_out, (1, kernel_size), stride=(1, stride), padding=(0, pad), bias=False)
        self.conv_kx1 = nn.Conv2d(C_out, C_out, (kernel_size, 1), stride=(stride, 1), padding=(pad, 0), bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)


class OpFactory(Protocol):
    """Builds one candidate op mapping ``C_in`` to ``C_out`` channels with a given stride."""

    def __call__(
        self, C_in: int, C_out: int, stride: int, *, affine: bool = True, track_running_stats: bool = True
    ) -> nn.Module: ...


def _none(C_in: int, C_out: int, stride: int, *, affine: bool = True, track_running_stats: bool = True) -> nn.Module:
    return Zero(C_in, C_out, stride)


def _skip_connect(
    C_in: int, C_out: int, stride: int, *, affine: bool = True, track_running_stats: bool = True
) -> nn.Module:
    if stride == 1 and C_in == C_out:
        return nn.Identity()
    if stride == 2:
        return FactorizedReduce(C_in, C_out, affine, track_running_stats)
    if stride == 1:
        return ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track_running_stats)
    raise ValueError(f"skip_connect supports stride 1 or 2, got {stride}")


def _op(build: Callable[..., nn.Module], **fixed: int) -> OpFactory:
    """The factory of ``build(C_in=, C_out=, stride=, affine=, track_running_stats=, **fixed)``:
    one op class with its kernel size, padding or dilation fixed, e.g. ``_op(SepConv,
    kernel_size=3, padding=1)``.
    """

    def factory(
        C_in: int, C_out: int, stride: int, *, affine: bool = True, track_running_stats: bool = True
    ) -> nn.Module:
        return build(
            C_in=C_in, C_out=C_out, stride=stride, affine=affine, track_running_stats=track_running_stats, **fixed
        )

    return factory


def _pool(make: Callable[[int], nn.Module]) -> OpFactory:
    def factory(
        C_in: int, C_out: int, stride: int, *, affine: bool = True, track_running_stats: bool = True
    ) -> nn.Module:
        if C_in == C_out:
            return make(stride)
        return nn.Sequential(ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track_running_stats), make(stride))

    return factory


#: Candidate ops by name. Pools and ``skip_connect`` project with a 1x1 ReLUConvBN (or
#: :class:`FactorizedReduce`) when the channel count or resolution has to change.
OPS: dict[str, OpFactory] = {
    "none": _none,
    "skip_connect": _skip_connect,
    "nor_conv_1x1": _op(ReLUConvBN, kernel_size=1, padding=0),
    "nor_conv_3x3": _op(ReLUConvBN, kernel_size=3, padding=1),
    "avg_pool_3x3": _pool(lambda stride: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)),
    "max_pool_3x3": _pool(lambda stride: nn.MaxPool2d(3, stride=stride, padding=1)),
    "sep_conv_3x3": _op(SepConv, kernel_size=3, padding=1),
    "sep_conv_5x5": _op(SepConv, kernel_size=5, padding=2),
    "sep_conv_7x7": _op(SepConv, kernel_size=7, padding=3),
    "dil_conv_3x3": _op(DilConv, kernel_size=3, padding=2, dilation=2),
    "dil_conv_5x5": _op(DilConv, kernel_size=5, padding=4, dilation=2),
    "conv_7x1_1x7": _op(AsymmetricConv, kernel_size=7),
}


# -- Candidates for converted user models (nasforge.nn.convert) -------------------------------------
# A converter puts these in place of a user's layer, so they are what such a layer usually is: a
# bare convolution (the model's own batch norm and activation stay around it), the identity, and
# MobileNetV2's inverted residual block (ProxylessNAS' candidates, named ``mbconv_e{E}_k{K}``).


def _bare_conv(kernel_size: int) -> OpFactory:
    def factory(
        C_in: int, C_out: int, stride: int, *, affine: bool = True, track_running_stats: bool = True
    ) -> nn.Module:
        return nn.Conv2d(C_in, C_out, kernel_size, stride, kernel_size // 2, bias=False)

    return factory


def _identity(
    C_in: int, C_out: int, stride: int, *, affine: bool = True, track_running_stats: bool = True
) -> nn.Module:
    if C_in != C_out or stride != 1:
        raise ValueError(
            f"identity keeps the shape, so it cannot map {C_in} to {C_out} channels with stride {stride}; "
            "use skip_connect, which projects"
        )
    return nn.Identity()


def _mbconv(kernel_size: int, expansion: int) -> OpFactory:
    def factory(
        C_in: int, C_out: int, stride: int, *, affine: bool = True, track_running_stats: bool = True
    ) -> nn.Module:
        return MBConv(C_in, C_out, kernel_size, stride, expansion)

    return factory


OPS.update(
    {
        **{f"conv{k}x{k}": _bare_conv(k) for k in (1, 3, 5, 7)},
        "identity": _identity,
        **{f"mbconv_e{e}_k{k}": _mbconv(k, e) for e in (3, 6) for k in (3, 5, 7)},
    }
)
