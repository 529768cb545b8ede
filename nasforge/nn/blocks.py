"""Mobile blocks: MBConv (MobileNetV2 inverted residual, with squeeze-and-excitation and grouped
1x1 convolutions with a channel shuffle), the skip block, and ShuffleNetV2 units (as SPOS
searches them). The blockwise spaces pick among them and the op table names MBConv variants, so
they live here, below both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["conv_bn", "ChannelShuffle", "SqueezeExcite", "MBConv", "SkipBlock", "ShuffleBlock", "Activation"]


Activation = Callable[[], nn.Module]


def conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: Activation | None = nn.ReLU6
) -> nn.Sequential:
    """A bias-free ``kernel x kernel`` convolution ("same" padding), batch norm, then ``act``."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    """Interleave the channels of ``groups`` groups (ShuffleNet, Zhang et al. 2018)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from a pooled 2-layer bottleneck."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, reduced, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(reduced, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2): 1x1 expansion, ``kernel`` depthwise, 1x1 projection.

    Args:
        c_in, c_out, stride: shape of the block; a residual is added when it keeps the shape.
        kernel: the depthwise kernel size.
        expansion: hidden channels are ``c_in * expansion``.
        groups: groups of both 1x1 convolutions, with a channel shuffle after the expansion
            (FBNet's ``_g2`` blocks).
        se: squeeze-and-excitation on the hidden channels, reduced to ``c_in // 4`` (MnasNet).
        act: the activation after the expansion and the depthwise convolution.
        expand_e1: keep the 1x1 expansion at ``expansion == 1`` (FBNet); MobileNetV2 drops it.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        expansion: int,
        groups: int = 1,
        se: bool = False,
        act: Activation = nn.ReLU6,
        expand_e1: bool = False,
    ) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1 or groups != 1 or expand_e1:
            layers.append(conv_bn(c_in, hidden, 1, groups=groups, act=act))
            if groups > 1:
                layers.append(ChannelShuffle(groups))
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden, max(1, c_in // 4)))
        layers.append(conv_bn(hidden, c_out, 1, groups=groups, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class SkipBlock(nn.Module):
    """FBNet's ``skip``: the identity, or a 1x1 conv-BN-ReLU where the layer changes shape."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        same = c_in == c_out and stride == 1
        self.body = nn.Identity() if same else conv_bn(c_in, c_out, 1, stride, act=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ShuffleBlock(nn.Module):
    """A ShuffleNetV2 unit as SPOS searches it (Guo et al., ECCV 2020).

    At stride 1 (``c_in == c_out``) the even channels pass through and the odd ones go through
    the main branch; at stride 2 a depthwise + 1x1 projection branch replaces the pass-through.
    The main branch is 1x1 / ``kernel`` depthwise / 1x1 (``choice_3/5/7``) or, for
    ``kernel="x"``, three depthwise 3x3 + 1x1 pairs (``choice_x``, Xception-like). Hidden
    channels: ``c_out // 2``; the concatenation is re-split by the next unit (the shuffle).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int | str) -> None:
        super().__init__()
        if stride == 1 and c_in != c_out:
            raise ValueError(f"a stride-1 ShuffleBlock keeps its width; got {c_in} -> {c_out}")
        self.stride = stride
        inp = c_in // 2 if stride == 1 else c_in
        hidden, out = c_out // 2, c_out - inp
        if kernel == "x":
            self.main = nn.Sequential(
                conv_bn(inp, inp, 3, stride, groups=inp, act=None),
                conv_bn(inp, hidden, 1, act=nn.ReLU),
                conv_bn(hidden, hidden, 3, groups=hidden, act=None),
                conv_bn(hidden, hidden, 1, act=nn.ReLU),
                conv_bn(hidden, hidden, 3, groups=hidden, act=None),
                conv_bn(hidden, out, 1, act=nn.ReLU),
            )
        else:
            k = int(kernel)
            self.main = nn.Sequential(
                conv_bn(inp, hidden, 1, act=nn.ReLU),
                conv_bn(hidden, hidden, k, stride, groups=hidden, act=None),
                conv_bn(hidden, out, 1, act=nn.ReLU),
            )
        proj_kernel = 3 if kernel == "x" else int(kernel)
        self.proj = (
            nn.Sequential(
                conv_bn(inp, inp, proj_kernel, stride, groups=inp, act=None), conv_bn(inp, inp, 1, act=nn.ReLU)
            )
            if stride == 2
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return torch.cat((x[:, 0::2], self.main(x[:, 1::2])), 1)
        return torch.cat((self.proj(x), self.main(x)), 1)
