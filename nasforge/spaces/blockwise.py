"""Blockwise spaces: a MobileNetV2-style macro skeleton whose layers each pick a block.

The skeleton (Sandler et al., CVPR 2018) is a strided stem convolution, stages of layers
(``width``, ``depth``, ``stride`` of the first layer), a final 1x1 convolution, global average
pooling and a linear classifier. A *layer-wise* space (ProxylessNAS, FBNet, SPOS) gives every layer
its own choice ``"layer1"``, ``"layer2"``, ... over blocks; archs print as the block names joined
by ``-``, e.g. ``k5_e6-skip-k3_e1_g2-...`` (the notation of the HELP latency tables).

Blocks: :class:`MBConv` (inverted residual with kernel, expansion, grouped 1x1 convolutions with
a channel shuffle, optional squeeze-and-excitation) and :class:`ShuffleBlock` (ShuffleNetV2 units
as searched by SPOS). ``small_input`` (automatic below 64 pixels) keeps 28x28 and 32x32 inputs
from vanishing: the stem runs at stride 1 and the first downsampling of the body is dropped.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nasforge.core.arch import Arch, Choice, Value
from nasforge.core.errors import InvalidArchError
from nasforge.core.space import SearchSpace
from nasforge.supernet.mixed import LayerChoice, Supernet

__all__ = [
    "conv_bn",
    "ChannelShuffle",
    "SqueezeExcite",
    "MBConv",
    "SkipBlock",
    "ShuffleBlock",
    "Stage",
    "LayerSlot",
    "BlockwiseNetwork",
    "NestedSupernet",
    "LayerwiseSpace",
    "layer_slots",
    "stage_inputs",
    "stages",
    "is_small_input",
]

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


@dataclass(frozen=True)
class Stage:
    """``depth`` layers of ``width`` output channels; the first has stride ``stride``."""

    width: int
    depth: int
    stride: int


@dataclass(frozen=True)
class LayerSlot:
    """One searchable layer: its shape and its candidate block names."""

    c_in: int
    c_out: int
    stride: int
    candidates: tuple[str, ...]


def is_small_input(input_size: tuple[int, int], small_input: bool | None) -> bool:
    """``small_input`` if given, else whether the input is under 64 pixels on a side."""
    return min(input_size) < 64 if small_input is None else small_input


def stages(*specs: tuple[int, int, int]) -> tuple[Stage, ...]:
    """Stages from ``(width, depth, stride)`` triples."""
    return tuple(Stage(*spec) for spec in specs)


def stage_inputs(c_in: int, stages: Sequence[Stage], small: bool) -> list[tuple[int, Stage]]:
    """Each stage with its input width, from ``c_in`` channels; with ``small`` the first
    stride-2 stage runs at stride 1 (its ``stride`` is 1 in the returned stage)."""
    out = []
    dropped = not small
    for stage in stages:
        if stage.stride == 2 and not dropped:
            stage, dropped = Stage(stage.width, stage.depth, 1), True
        out.append((c_in, stage))
        c_in = stage.width
    return out


def layer_slots(
    c_in: int, stages: Sequence[Stage], small: bool, candidates: Callable[[int, int, int], tuple[str, ...]]
) -> list[LayerSlot]:
    """The layers of ``stages`` from ``c_in`` channels (strides as :func:`stage_inputs` sets
    them). ``candidates(c_in, c_out, stride)`` gives each layer's block names."""
    slots = []
    for stage_in, stage in stage_inputs(c_in, stages, small):
        for i in range(stage.depth):
            shape = (stage_in if i == 0 else stage.width, stage.width, stage.stride if i == 0 else 1)
            slots.append(LayerSlot(*shape, candidates(*shape)))
    return slots


class BlockwiseNetwork(nn.Module):
    """Stem, layers, final 1x1 conv-BN-act, global pooling, dropout, linear classifier."""

    def __init__(
        self,
        stem: nn.Module,
        layers: Sequence[nn.Module],
        head: nn.Module,
        head_width: int,
        num_classes: int,
        dropout: float = 0.0,
        classifier_bias: bool = True,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.layers = nn.Sequential(*layers)
        self.head = head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head_width, num_classes, bias=classifier_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.layers(self.stem(x)))
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


class NestedSupernet(Supernet):
    """A :class:`Supernet` whose choice modules may hold other choice modules (a layer-count
    choice over blocks that are themselves choices): inner modules are frozen first on export,
    so the exported child holds no choice module."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__(network)
        self._choices.sort(key=lambda item: -item[0].count("."))


class LayerwiseSpace(SearchSpace):
    """A space with one block choice per layer, ``"layer1"`` ... ``"layerN"``, over a skeleton.

    Subclasses set ``self.slots`` (one :class:`LayerSlot` per layer) and :attr:`NAMED` and
    implement :meth:`block` (a block by name and shape) and :meth:`network` (the skeleton around
    a list of layer modules).
    """

    #: Published archs of this space: name -> block names, one per layer.
    NAMED: Mapping[str, Sequence[str]] = {}
    slots: list[LayerSlot]

    @abstractmethod
    def block(self, name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
        """The block ``name`` mapping ``c_in`` to ``c_out`` channels at ``stride``."""

    @abstractmethod
    def network(self, layers: Sequence[nn.Module]) -> nn.Module:
        """The skeleton around ``layers``."""

    def choices(self) -> Mapping[str, Choice]:
        return {
            f"layer{i}": Choice(
                f"layer{i}", slot.candidates, description=f"block {slot.c_in}->{slot.c_out}, stride {slot.stride}"
            )
            for i, slot in enumerate(self.slots, start=1)
        }

    def build(self, arch: Arch) -> nn.Module:
        self.validate(arch)
        return self.network(
            [self.block(str(arch[f"layer{i}"]), s.c_in, s.c_out, s.stride) for i, s in enumerate(self.slots, start=1)]
        )

    def supernet(self) -> Supernet:
        """Every layer a :class:`LayerChoice` named ``"layerI"`` over its candidate blocks."""
        return Supernet(
            self.network(
                [
                    LayerChoice(f"layer{i}", {v: self.block(v, s.c_in, s.c_out, s.stride) for v in s.candidates})
                    for i, s in enumerate(self.slots, start=1)
                ]
            )
        )

    def named(self, name: str) -> Arch:
        """A published arch of this space by name (see :attr:`NAMED`)."""
        if name not in self.NAMED:
            raise KeyError(
                f"{type(self).__name__} has no named arch {name!r}; known: {', '.join(self.NAMED) or 'none'}"
            )
        return self.parse("-".join(self.NAMED[name]))

    def parse(self, text: str) -> Arch:
        """Read ``block-block-...`` (one block per layer), a name of :attr:`NAMED`, or the generic JSON form."""
        text = text.strip()
        if text in self.NAMED:
            return self.named(text)
        if text.startswith("{"):
            return super().parse(text)
        parts = text.split("-")
        if len(parts) != len(self.slots):
            raise InvalidArchError(
                f"{type(self).__name__}: arch {text!r} has {len(parts)} layer(s) separated by '-'; "
                f"expected {len(self.slots)}"
            )
        values: dict[str, Value] = {}
        for i, (part, slot) in enumerate(zip(parts, self.slots, strict=True), start=1):
            if part not in slot.candidates:
                raise InvalidArchError(
                    f"layer {i} ({slot.c_in}->{slot.c_out}, stride {slot.stride}): unknown block {part!r}; "
                    f"allowed: {', '.join(slot.candidates)}"
                )
            values[f"layer{i}"] = part
        return self.validate(Arch(values))

    def format(self, arch: Arch) -> str:
        """The blocks joined by ``-``, e.g. ``k3_e3-zero-k5_e6-...``."""
        self.validate(arch)
        return "-".join(str(arch[f"layer{i}"]) for i in range(1, len(self.slots) + 1))
