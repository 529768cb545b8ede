"""Blockwise spaces on MobileNetV2-style skeletons: ProxylessNAS, FBNet, SPOS and MnasNet.

Every space takes ``in_channels``, ``num_classes`` and ``input_size`` (filled from the data by the
runner) and ``small_input`` (default: automatic below 64 pixels; see
:mod:`nasforge.spaces.blockwise`), and has a :meth:`supernet` for one-shot and differentiable
estimators. ImageNet counts at 224x224, 1000 classes (``count_params`` / ``count_macs``):

* MobileNetV2 (``ProxylessSpace(skeleton="mobilenet_v2").named("mobilenet_v2")``): 3,504,872
  parameters (torchvision's count) and 300.8M MACs (paper: 3.4M, 300M).
* FBNet-A (``head_width=1504``, as published) / B / C: 4.32M / 4.81M / 5.57M parameters and
  249.9M / 296.6M / 385.0M MACs (paper: 4.3M / 4.5M / 5.5M, 249M / 295M / 375M). The blocks are
  those of the released models (mobile-vision's ``fbnet_a/b/c``; C is timm's ``fbnetc_100``,
  5.57M / 385M). FBNet-B's 4.5M is not reachable from its published blocks: without the 1x1
  expansion of ``e1`` blocks (mobile-vision's default) it has 4.75M / 281M, with A's 1504-wide
  head 4.16M / 288M; the released definition is kept.
* MnasNet-A1: 3,887,038 parameters, 311.6M MACs (paper: 3.9M, 312M).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

from pydantic import PositiveFloat, PositiveInt
from torch import nn

from nasforge.core.arch import Arch, Choice
from nasforge.core.errors import InvalidArchError
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace
from nasforge.hardware.lut import CostLayer
from nasforge.nn.blocks import MBConv, ShuffleBlock, SkipBlock, conv_bn
from nasforge.nn.elastic import make_divisible
from nasforge.nn.mixed import MixedOp, Supernet
from nasforge.spaces.blockwise import (
    BlockwiseNetwork,
    LayerwiseSpace,
    NestedSupernet,
    Stage,
    is_small_input,
    layer_slots,
    stage_inputs,
    stages,
)

__all__ = ["ProxylessSpace", "FBNetSpace", "SPOSSpace", "MnasNetSpace", "FBNET_BLOCKS", "SPOS_BLOCKS"]

_MB = re.compile(r"k(\d+)_e(\d+)(?:_g(\d+))?(_se)?")


def _mbconv(name: str, c_in: int, c_out: int, stride: int, **kwargs: object) -> MBConv:
    """The MBConv a name like ``k5_e6``, ``k3_e1_g2`` or ``k3_e6_se`` describes."""
    match = _MB.fullmatch(name)
    assert match is not None, name
    k, e, g, se = match.groups()
    return MBConv(c_in, c_out, int(k), stride, int(e), groups=int(g or 1), se=bool(se), **kwargs)  # type: ignore[arg-type]


#: ProxylessNAS' candidate blocks (Cai et al., ICLR 2019); ``zero`` skips the layer.
PROXYLESS_BLOCKS: tuple[str, ...] = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6", "zero")

_SKELETONS: dict[str, tuple[Stage, ...]] = {
    # ProxylessNAS' mobile backbone: 21 searched layers after the fixed first block.
    "proxyless": stages((24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)),
    # MobileNetV2's widths and depths (Sandler et al. 2018, Table 2): 16 searched layers.
    "mobilenet_v2": stages((24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)),
}


@register("space", "proxyless", tags=("blockwise", "supernet"))
class ProxylessSpace(LayerwiseSpace):
    """ProxylessNAS (Cai et al., ICLR 2019): each layer an MBConv of kernel 3/5/7 and expansion
    3/6, or ``zero`` (the layer is skipped; not offered where the layer changes shape).

    Skeleton: 3x3 stem to 32 channels (stride 2), a fixed MBConv k3 e1 to 16, the searched stages,
    a 1x1 convolution to 1280, pooling, dropout 0.2, a linear classifier; ReLU6 throughout.
    ``skeleton="mobilenet_v2"`` takes MobileNetV2's widths and depths, where
    ``named("mobilenet_v2")`` (k3_e6 everywhere) is MobileNetV2 itself.

    Args:
        in_channels, num_classes, input_size: the data (filled by the runner).
        small_input: stem at stride 1 and the first downsampling stage at stride 1 (for 28x28 and
            32x32 inputs); default: whether the input is under 64 pixels on a side.
        skeleton: ``"proxyless"`` (the paper's) or ``"mobilenet_v2"``.
    """

    def __init__(
        self,
        in_channels: PositiveInt = 3,
        num_classes: PositiveInt = 1000,
        input_size: tuple[PositiveInt, PositiveInt] = (224, 224),
        small_input: bool | None = None,
        skeleton: Literal["proxyless", "mobilenet_v2"] = "proxyless",
    ) -> None:
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.small = is_small_input(input_size, small_input)
        self.skeleton = skeleton
        self.slots = layer_slots(
            16,
            _SKELETONS[skeleton],
            self.small,
            lambda c_in, c_out, s: PROXYLESS_BLOCKS if (c_in == c_out and s == 1) else PROXYLESS_BLOCKS[:-1],
        )
        self.NAMED = {"mobilenet_v2": ["k3_e6"] * len(self.slots)} if skeleton == "mobilenet_v2" else {}

    def block(self, name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
        return nn.Identity() if name == "zero" else _mbconv(name, c_in, c_out, stride)

    def network(self, layers: Sequence[nn.Module]) -> nn.Module:
        stem = nn.Sequential(conv_bn(self.in_channels, 32, 3, 1 if self.small else 2), MBConv(32, 16, 3, 1, 1))
        return BlockwiseNetwork(stem, layers, conv_bn(self.slots[-1].c_out, 1280, 1), 1280, self.num_classes, 0.2)

    def named(self, name: str) -> Arch:
        if name == "mobilenet_v2" and self.skeleton != "mobilenet_v2":
            raise KeyError("mobilenet_v2 is an arch of ProxylessSpace(skeleton='mobilenet_v2')")
        return super().named(name)


#: FBNet's 9 candidate blocks (Wu et al., CVPR 2019, Table 2), in the HELP tables' index order.
FBNET_BLOCKS: tuple[str, ...] = (
    "k3_e1",
    "k3_e1_g2",
    "k3_e3",
    "k3_e6",
    "k5_e1",
    "k5_e1_g2",
    "k5_e3",
    "k5_e6",
    "skip",
)
_FBNET_STAGES = stages((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))


@register("space", "fbnet", tags=("blockwise", "supernet"))
class FBNetSpace(LayerwiseSpace):
    """FBNet (Wu et al., CVPR 2019, Table 1): 22 layers, each one of :data:`FBNET_BLOCKS`.

    Skeleton: 3x3 stem to 16 (stride 2), stages of widths 16, 24, 32, 64, 112, 184, 352 with
    1, 4, 4, 4, 4, 4, 1 layers, a 1x1 convolution to ``head_width`` (1984; 1504 in the published
    FBNet-A), pooling, a linear classifier; ReLU.
    ``kK_eE`` is an MBConv whose 1x1 expansion is kept even at ``e1``; ``_g2`` makes both 1x1
    convolutions 2-group with a channel shuffle; ``skip`` is the identity, or a 1x1
    conv-BN-ReLU where the layer changes shape (as in FBNet's code). Archs read and print as the
    HELP latency tables write them (``k5_e6-skip-k3_e1_g2-...``). Named: ``fbnet_a/b/c``.
    """

    NAMED = {
        "fbnet_a": (
            "skip",
            *("k3_e3", "k3_e1", "skip", "skip"),
            *("k5_e6", "k3_e3", "k5_e1", "k3_e3"),
            *("k5_e6", "k5_e3", "k5_e1_g2", "k5_e6"),
            *("k3_e6", "k5_e1_g2", "k5_e3", "k3_e1_g2"),
            *("k5_e6", "k5_e6", "k5_e3", "k5_e6"),
            "k5_e6",
        ),
        "fbnet_b": (
            "k3_e1",
            *("k3_e6", "k5_e1", "k3_e1", "k3_e1"),
            *("k5_e6", "k5_e3", "k3_e6", "k5_e6"),
            *("k5_e6", "k5_e1", "skip", "k5_e3"),
            *("k5_e6", "k3_e1", "k5_e1", "k5_e3"),
            *("k5_e6", "k5_e1", "k5_e6", "k5_e6"),
            "k3_e6",
        ),
        "fbnet_c": (
            "k3_e1",
            *("k3_e6", "skip", "k3_e1", "k3_e1"),
            *("k5_e6", "k5_e3", "k5_e6", "k3_e6"),
            *("k5_e6", "k5_e3", "k5_e6", "k5_e6"),
            *("k5_e6", "k5_e6", "k5_e6", "k5_e3"),
            *("k5_e6", "k5_e6", "k5_e6", "k5_e6"),
            "k3_e6",
        ),
    }

    def __init__(
        self,
        in_channels: PositiveInt = 3,
        num_classes: PositiveInt = 1000,
        input_size: tuple[PositiveInt, PositiveInt] = (224, 224),
        small_input: bool | None = None,
        head_width: PositiveInt = 1984,
        width_mult: PositiveFloat = 1.0,
    ) -> None:
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.small = is_small_input(input_size, small_input)
        self.head_width = head_width
        # FBNet's scaled variants (e.g. FBNet-96-0.35): every width times width_mult, to a multiple of 8.
        self.stem_width = make_divisible(16 * width_mult)
        stages = tuple(Stage(make_divisible(s.width * width_mult), s.depth, s.stride) for s in _FBNET_STAGES)
        self.slots = layer_slots(self.stem_width, stages, self.small, lambda *_: FBNET_BLOCKS)

    def block(self, name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
        if name == "skip":
            return SkipBlock(c_in, c_out, stride)
        return _mbconv(name, c_in, c_out, stride, act=nn.ReLU, expand_e1=True)

    def network(self, layers: Sequence[nn.Module]) -> nn.Module:
        stem = conv_bn(self.in_channels, self.stem_width, 3, 1 if self.small else 2, act=nn.ReLU)
        head = conv_bn(self.slots[-1].c_out, self.head_width, 1, act=nn.ReLU)
        return BlockwiseNetwork(stem, layers, head, self.head_width, self.num_classes)


#: SPOS' ShuffleNetV2 blocks (Guo et al., ECCV 2020).
SPOS_BLOCKS: tuple[str, ...] = ("choice_3", "choice_5", "choice_7", "choice_x")
_SPOS_STAGES = stages((64, 4, 2), (160, 4, 2), (320, 8, 2), (640, 4, 2))


@register("space", "spos", tags=("blockwise", "supernet"))
class SPOSSpace(LayerwiseSpace):
    """Single Path One-Shot's block space (Guo et al., ECCV 2020): 20 ShuffleNetV2 layers, each
    one of :data:`SPOS_BLOCKS` (4**20 archs), on the paper's 1.0x supernet skeleton.

    Skeleton (SPOS' code, no max pool after the stem, unlike ShuffleNetV2): 3x3 stem to 16
    (stride 2), stages of widths 64, 160, 320, 640 with 4, 4, 8, 4 layers (each stride 2 first),
    a 1x1 convolution to 1024, pooling, dropout 0.1, a bias-free linear classifier.
    ``small_input`` runs the stem at stride 1.
    """

    def __init__(
        self,
        in_channels: PositiveInt = 3,
        num_classes: PositiveInt = 1000,
        input_size: tuple[PositiveInt, PositiveInt] = (224, 224),
        small_input: bool | None = None,
    ) -> None:
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.small = is_small_input(input_size, small_input)
        self.slots = layer_slots(16, _SPOS_STAGES, False, lambda *_: SPOS_BLOCKS)

    def block(self, name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
        kernel = name.removeprefix("choice_")
        return ShuffleBlock(c_in, c_out, stride, kernel if kernel == "x" else int(kernel))

    def network(self, layers: Sequence[nn.Module]) -> nn.Module:
        stem = conv_bn(self.in_channels, 16, 3, 1 if self.small else 2, act=nn.ReLU)
        head = conv_bn(self.slots[-1].c_out, 1024, 1, act=nn.ReLU)
        return BlockwiseNetwork(stem, layers, head, 1024, self.num_classes, 0.1, classifier_bias=False)


#: MnasNet's per-stage block candidates: kernel 3/5 x expansion 3/6 x squeeze-excite off/on.
MNASNET_BLOCKS: tuple[str, ...] = tuple(f"k{k}_e{e}{se}" for k in (3, 5) for e in (3, 6) for se in ("", "_se"))
#: MnasNet-A1's searched stages (Tan et al., CVPR 2019, Fig. 7); depth is A1's layer count.
_MNAS_STAGES = stages((24, 2, 2), (40, 3, 2), (80, 4, 2), (112, 2, 1), (160, 3, 2), (320, 1, 1))
_MNAS_STAGE = re.compile(r"(.+)x(\d+)")


@register("space", "mnasnet", tags=("blockwise", "supernet"))
class MnasNetSpace(SearchSpace):
    """MnasNet's factorized hierarchical space (Tan et al., CVPR 2019), simplified.

    Stages 2-7 of MnasNet-A1 (widths 24, 40, 80, 112, 160, 320) each choose one block for all
    their layers (``"stageS.block"``: MBConv of kernel 3/5, expansion 3/6, SE on/off) and their
    number of layers (``"stageS.layers"``: A1's count -1, +0, +1, at least 1). Simplified from the
    paper: widths are fixed (no filter-size ratio), and plain convolutions, the skip-op choice and
    the identity residual choice are left out. The stem (3x3 conv to 32, stride 2, and a
    separable 3x3 conv to 16) and head (1x1 conv to 1280, pooling, dropout 0.2, linear) are A1's.
    SE gates reduce to a quarter of the block's input channels. Archs print one
    ``BLOCKxLAYERS`` per stage joined by ``-``; ``named("mnasnet_a1")`` is MnasNet-A1::

        k3_e6x2-k5_e3_sex3-k3_e6x4-k3_e6_sex2-k5_e6_sex3-k3_e6x1
    """

    NAMED = {"mnasnet_a1": "k3_e6x2-k5_e3_sex3-k3_e6x4-k3_e6_sex2-k5_e6_sex3-k3_e6x1"}

    def __init__(
        self,
        in_channels: PositiveInt = 3,
        num_classes: PositiveInt = 1000,
        input_size: tuple[PositiveInt, PositiveInt] = (224, 224),
        small_input: bool | None = None,
    ) -> None:
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.small = is_small_input(input_size, small_input)
        self._choices: dict[str, Choice] = {}
        for s, stage in enumerate(_MNAS_STAGES, start=2):
            self._choices[f"stage{s}.block"] = Choice(
                f"stage{s}.block", MNASNET_BLOCKS, description=f"block of stage {s} ({stage.width} ch)"
            )
            depths = tuple(d for d in (stage.depth - 1, stage.depth, stage.depth + 1) if d >= 1)
            self._choices[f"stage{s}.layers"] = Choice(
                f"stage{s}.layers", depths, ordered=True, description=f"layers of stage {s}"
            )

    def choices(self) -> Mapping[str, Choice]:
        return self._choices

    def _layers(self) -> Iterator[tuple[int, int, tuple[int, int, int]]]:
        """``(stage, layer index, (c_in, c_out, stride))`` of every layer a stage may have,
        strides adjusted for small inputs."""
        for s, (c_in, stage) in enumerate(stage_inputs(16, _MNAS_STAGES, self.small), start=2):
            for i in range(int(max(self._choices[f"stage{s}.layers"].candidates))):
                yield s, i, (c_in if i == 0 else stage.width, stage.width, stage.stride if i == 0 else 1)

    def _network(self, layers: Sequence[nn.Module]) -> nn.Module:
        stem = nn.Sequential(
            conv_bn(self.in_channels, 32, 3, self._stem_stride, act=nn.ReLU),
            conv_bn(32, 32, 3, groups=32, act=nn.ReLU),
            conv_bn(32, 16, 1, act=None),
        )
        return BlockwiseNetwork(stem, layers, conv_bn(320, 1280, 1, act=nn.ReLU), 1280, self.num_classes, 0.2)

    @property
    def _stem_stride(self) -> int:
        return 1 if self.small else 2

    def build(self, arch: Arch) -> nn.Module:
        self.validate(arch)
        return self._network(
            [
                _mbconv(str(arch[f"stage{s}.block"]), *shape, act=nn.ReLU)
                for s, i, shape in self._layers()
                if i < int(arch[f"stage{s}.layers"])
            ]
        )

    def supernet(self) -> Supernet:
        """Each layer a :class:`MixedOp` ``"stageS.block"`` over the blocks; each optional
        layer (beyond a stage's fewest) is wrapped in a :class:`MixedOp` ``"stageS.layers"``
        whose candidates are the identity (too few layers) or that block choice."""
        layers: list[nn.Module] = []
        for s, i, shape in self._layers():
            depths = self._choices[f"stage{s}.layers"].candidates
            blocks = MixedOp(f"stage{s}.block", {b: _mbconv(b, *shape, act=nn.ReLU) for b in MNASNET_BLOCKS})
            if i < min(depths):
                layers.append(blocks)
            else:
                layers.append(MixedOp(f"stage{s}.layers", {d: blocks if i < d else nn.Identity() for d in depths}))
        return NestedSupernet(self._network(layers))

    def cost_layers(self, input_shape: tuple[int, ...]) -> list[CostLayer]:
        """The layers for cost tables (:mod:`nasforge.hardware.lut`): layer ``i`` of stage ``s``
        is selected by ``stageS.block`` and ``stageS.layers``, and absent where the stage has
        ``i`` layers or fewer."""
        _, height, width = input_shape
        height, width = -(-height // self._stem_stride), -(-width // self._stem_stride)
        layers = []
        for s, i, (c_in, c_out, stride) in self._layers():
            depths = self._choices[f"stage{s}.layers"].candidates
            blocks = {b: _mbconv(b, c_in, c_out, stride, act=nn.ReLU) for b in MNASNET_BLOCKS}
            candidates = {(b, d): blocks[b] if i < int(d) else None for b in MNASNET_BLOCKS for d in depths}
            choices = (f"stage{s}.block", f"stage{s}.layers")
            layers.append(CostLayer(f"stage{s}.layer{i + 1}", choices, candidates, (c_in, height, width)))
            height, width = -(-height // stride), -(-width // stride)
        return layers

    def named(self, name: str) -> Arch:
        """A published arch by name: ``"mnasnet_a1"``."""
        if name not in self.NAMED:
            raise KeyError(f"MnasNetSpace has no named arch {name!r}; known: {', '.join(self.NAMED)}")
        return self.parse(self.NAMED[name])

    def parse(self, text: str) -> Arch:
        """Read ``BLOCKxLAYERS-...`` (one per stage, e.g. ``k3_e6x2-k5_e3_sex3-...``) or JSON."""
        text = text.strip()
        if text.startswith("{"):
            return super().parse(text)
        parts = text.split("-")
        if len(parts) != len(_MNAS_STAGES):
            raise InvalidArchError(f"MnasNet arch {text!r} has {len(parts)} stage(s); expected {len(_MNAS_STAGES)}")
        values: dict[str, str | int] = {}
        for s, part in enumerate(parts, start=2):
            match = _MNAS_STAGE.fullmatch(part)
            if match is None or match.group(1) not in MNASNET_BLOCKS:
                raise InvalidArchError(
                    f"MnasNet stage {s}: {part!r} must be BLOCKxLAYERS with BLOCK one of {', '.join(MNASNET_BLOCKS)}"
                )
            depths = self._choices[f"stage{s}.layers"].candidates
            if int(match.group(2)) not in depths:
                raise InvalidArchError(
                    f"MnasNet stage {s}: {match.group(2)} layers; allowed: {', '.join(map(str, depths))}"
                )
            values[f"stage{s}.block"] = match.group(1)
            values[f"stage{s}.layers"] = int(match.group(2))
        return self.validate(Arch(values))

    def format(self, arch: Arch) -> str:
        self.validate(arch)
        return "-".join(
            f"{arch[f'stage{s}.block']}x{arch[f'stage{s}.layers']}" for s in range(2, 2 + len(_MNAS_STAGES))
        )
