"""The once-for-all space: an elastic MobileNetV3 whose every subnet shares one set of weights.

Cai et al. 2020, "Once-for-All: Train One Network and Specialize it for Efficient Deployment"
(ICLR), the ``OFAMobileNetV3`` search space: a 3x3 stem (16 channels, stride 2, h-swish), a
fixed inverted residual (3x3 depthwise, expansion 1, 16 channels), five elastic stages of widths
24, 40, 80, 112, 160 and strides 2, 2, 2, 1, 2 (ReLU in the first two, h-swish after; squeeze-and-
excitation in stages 2, 4, 5), a 1x1 convolution to ``6 x 160 = 960`` channels, global pooling, a
1x1 "feature mix" convolution to 1280 (h-swish, no batch norm), dropout 0.1 and a linear
classifier. Each stage picks its depth (2/3/4 blocks), each block its depthwise kernel (3/5/7)
and expansion ratio (3/4/6): ``(3 * 3) ** 2 + (3 * 3) ** 3 + (3 * 3) ** 4`` archs per stage,
about 2 x 10**19 in all, as in the paper. The elastic mechanism is :mod:`nasforge.nn.elastic`.

Choices: ``stageS.depth`` and ``stageS.blockB.kernel`` / ``stageS.blockB.expand`` for every
block (blocks beyond the depth are inactive: they do not change the network). Archs print as the
active blocks of each stage, ``kKeE`` joined by ``-``, stages joined by ``_``::

    k3e6-k3e6_k5e4-k5e4-k5e4_...

``small_input`` (automatic below 64 pixels) runs the stem at stride 1 and the first stride-2
stage at stride 1 (as the blockwise spaces do); ``stage_widths``, ``stage_strides``,
``stem_width``, ``feature_width`` and ``width_mult`` (OFA's ``w1.0`` / ``w1.2``, every width
times it, rounded to a multiple of 8) size the skeleton for small data. Named archs: ``largest``,
``smallest`` and ``mobilenet_v2`` (kernel 3, expansion 6, MobileNetV2's depths 2, 3, 4, 3, 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import Tensor, nn

from nasforge.core.arch import Arch, Choice, Value
from nasforge.core.errors import ConfigError, InvalidArchError
from nasforge.core.registry import register
from nasforge.core.space import SearchSpace
from nasforge.hardware.lut import CostLayer
from nasforge.nn.blocks import conv_bn
from nasforge.nn.elastic import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticSequential,
    ElasticSupernet,
    Kind,
    Width,
    WidthChoice,
    elastic_kinds,
    make_divisible,
)
from nasforge.nn.model_space import ModelSpace
from nasforge.nn.mutables import ValueChoice, collect_choices, freeze
from nasforge.spaces.blockwise import is_small_input

__all__ = ["OFASpace", "InvertedResidual", "SqueezeExcite", "MobileNetV3"]

Activation = Literal["relu", "h_swish"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "h_swish": nn.Hardswish}
#: OFA-MobileNetV3's per-stage activation and squeeze-and-excitation.
_STAGE_ACTS: tuple[Activation, ...] = ("relu", "relu", "h_swish", "h_swish", "h_swish")
_STAGE_SE = (False, True, False, True, True)
_MOBILENET_V2_DEPTHS = (2, 3, 4, 3, 3)
#: The archs :meth:`OFASpace.named` knows.
OFA_NAMES = ("largest", "smallest", "mobilenet_v2")


class SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-and-excitation: pooled, reduced to a quarter (a multiple of 8),
    ReLU, expanded, hard sigmoid; the reduced width follows the elastic ``channels``."""

    def __init__(self, channels: Width, reduced: Width) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = ElasticConv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU()
        self.expand = ElasticConv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """OFA's MBConv: 1x1 expansion (absent when ``expand`` is None), depthwise ``kernel``
    convolution, optional squeeze-and-excitation, 1x1 projection; a residual where the shape
    is kept. Kernel and expansion may be elastic (a ``ValueChoice`` / :class:`WidthChoice`)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | ValueChoice,
        stride: int,
        expand: WidthChoice | None,
        act: Activation,
        se: bool,
    ) -> None:
        super().__init__()
        hidden: Width = c_in if expand is None else expand
        activation = _ACTIVATIONS[act]
        self.expand = (
            nn.Identity()
            if expand is None
            else nn.Sequential(ElasticConv2d(c_in, hidden, 1), ElasticBatchNorm2d(hidden), activation())
        )
        self.depthwise = nn.Sequential(
            ElasticConv2d(hidden, hidden, kernel, stride, depthwise=True), ElasticBatchNorm2d(hidden), activation()
        )
        if se and isinstance(hidden, WidthChoice):
            reduced: Width = WidthChoice(hidden.label, {v: make_divisible(c // 4) for v, c in hidden.sizes.items()})
        else:
            reduced = make_divisible(c_in // 4)
        self.se = SqueezeExcite(hidden, reduced) if se else nn.Identity()
        self.project = nn.Sequential(ElasticConv2d(hidden, c_out, 1), ElasticBatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class MobileNetV3(nn.Module):
    """OFA-MobileNetV3's skeleton: stem, blocks, final expansion, pooling, feature mix, classifier."""

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], final: nn.Module, feature_mix: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.final = final
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_mix = feature_mix
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.final(self.blocks(self.stem(x))))
        return self.classifier(torch.flatten(self.feature_mix(x), 1))


_Ordered = tuple[PositiveInt, ...]


@register("space", "ofa", tags=("blockwise", "supernet", "elastic"))
class OFASpace(SearchSpace):
    """Once-for-all's elastic MobileNetV3 (Cai et al., ICLR 2020): depth, kernel and expansion.

    Args:
        in_channels, num_classes, input_size: the data (filled by the runner).
        small_input: stem and first downsampling stage at stride 1 (28x28, 32x32 inputs);
            default: whether the input is under 64 pixels on a side.
        kernels, expands, depths: the elastic candidates (OFA: 3/5/7, 3/4/6, 2/3/4).
        stage_widths, stage_strides: the five stages (OFA: 24, 40, 80, 112, 160; 2, 2, 2, 1, 2).
        stem_width: channels of the stem and the fixed first block (OFA: 16).
        feature_width: channels of the feature-mix layer before the classifier (OFA: 1280).
        width_mult: multiplies every width (rounded to a multiple of 8); OFA offers 1.0 and 1.2.
        dropout: before the classifier (OFA: 0.1).
    """

    def __init__(
        self,
        in_channels: PositiveInt = 3,
        num_classes: PositiveInt = 1000,
        input_size: tuple[PositiveInt, PositiveInt] = (224, 224),
        small_input: bool | None = None,
        kernels: _Ordered = (3, 5, 7),
        expands: _Ordered = (3, 4, 6),
        depths: _Ordered = (2, 3, 4),
        stage_widths: _Ordered = (24, 40, 80, 112, 160),
        stage_strides: tuple[Literal[1, 2], ...] = (2, 2, 2, 1, 2),
        stem_width: PositiveInt = 16,
        feature_width: PositiveInt = 1280,
        width_mult: PositiveFloat = 1.0,
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1,
    ) -> None:
        if len(stage_widths) != len(_STAGE_ACTS) or len(stage_strides) != len(_STAGE_ACTS):
            raise ConfigError(
                f"ofa: stage_widths and stage_strides need one entry per stage ({len(_STAGE_ACTS)}); "
                f"got {list(stage_widths)} and {list(stage_strides)}"
            )
        for name, values in (("kernels", kernels), ("expands", expands), ("depths", depths)):
            if len(set(values)) != len(values):
                raise ConfigError(f"ofa: {name} has repeated values: {list(values)}")
        if any(k % 2 == 0 for k in kernels):
            raise ConfigError(f"ofa: kernels must be odd (one centred kernel serves them all), got {list(kernels)}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.small = is_small_input(input_size, small_input)
        self.kernels, self.expands, self.depths = sorted(kernels), sorted(expands), sorted(depths)
        self.widths = [make_divisible(w * width_mult) for w in stage_widths]
        self.strides = list(stage_strides)
        if self.small and 2 in self.strides:
            self.strides[self.strides.index(2)] = 1
        self.stem_width = make_divisible(stem_width * width_mult)
        self.feature_width = make_divisible(feature_width * width_mult)
        self.dropout = dropout
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's generator alone
            network = self._network()
        self._choices = collect_choices(network)
        self._kinds = elastic_kinds(network)

    # -- the network -------------------------------------------------------------------------------

    def _block(self, stage: int, index: int, c_in: int) -> InvertedResidual:
        s = stage - 1
        return InvertedResidual(
            c_in,
            self.widths[s],
            ValueChoice(self.kernels, f"stage{stage}.block{index}.kernel"),
            self.strides[s] if index == 1 else 1,
            WidthChoice.expansion(f"stage{stage}.block{index}.expand", self.expands, c_in),
            _STAGE_ACTS[s],
            _STAGE_SE[s],
        )

    def _network(self) -> MobileNetV3:
        """The elastic network (every choice at its largest until an arch is set)."""
        stem = conv_bn(self.in_channels, self.stem_width, 3, 1 if self.small else 2, act=nn.Hardswish)
        blocks: list[nn.Module] = [InvertedResidual(self.stem_width, self.stem_width, 3, 1, None, "relu", False)]
        c_in = self.stem_width
        for stage, width in enumerate(self.widths, start=1):
            stage_blocks = [self._block(stage, b, c_in if b == 1 else width) for b in range(1, self.depths[-1] + 1)]
            blocks.append(ElasticSequential(stage_blocks, ValueChoice(self.depths, f"stage{stage}.depth")))
            c_in = width
        final_width = 6 * self.widths[-1]
        final = conv_bn(self.widths[-1], final_width, 1, act=nn.Hardswish)
        feature_mix = nn.Sequential(nn.Conv2d(final_width, self.feature_width, 1, bias=False), nn.Hardswish())
        classifier = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(self.feature_width, self.num_classes))
        return MobileNetV3(stem, blocks, final, feature_mix, classifier)

    # -- the space contract ------------------------------------------------------------------------

    def choices(self) -> Mapping[str, Choice]:
        return self._choices

    def elastic_kinds(self) -> dict[str, Kind]:
        """Each choice's elastic dimension: ``kernel``, ``depth`` or ``width`` (the expansion)."""
        return dict(self._kinds)

    def build(self, arch: Arch) -> nn.Module:
        """The standalone child of ``arch``, freshly initialised (the global torch generator)."""
        self.validate(arch)
        return ModelSpace(self._network()).build(arch)

    def supernet(self) -> ElasticSupernet:
        """The elastic supernet; ``export(arch)`` is the child with the supernet's weights."""
        return ElasticSupernet(self._network())

    def cost_layers(self, input_shape: tuple[int, ...]) -> list[CostLayer]:
        """Every elastic block as a layer: selected by its kernel and expansion, and by its
        stage's depth where the depth may drop it (then its candidate is None)."""
        with torch.random.fork_rng(devices=[]):
            network = self._network()
        shapes: dict[int, tuple[int, ...]] = {}
        hooks = [
            block.register_forward_pre_hook(lambda m, args: shapes.__setitem__(id(m), tuple(args[0].shape[1:])))
            for stage in network.blocks
            if isinstance(stage, ElasticSequential)
            for block in stage.blocks
        ]
        with torch.no_grad():
            network.eval()(torch.zeros(1, *input_shape))
        for hook in hooks:
            hook.remove()
        layers = []
        for stage_index, stage in enumerate((m for m in network.blocks if isinstance(m, ElasticSequential)), start=1):
            for b, block in enumerate(stage.blocks, start=1):
                prefix = f"stage{stage_index}.block{b}"
                frozen = {
                    (k, e): freeze(block, {f"{prefix}.kernel": k, f"{prefix}.expand": e})
                    for k in self.kernels
                    for e in self.expands
                }
                if b <= self.depths[0]:
                    layers.append(CostLayer(prefix, (f"{prefix}.kernel", f"{prefix}.expand"), frozen, shapes[id(block)]))
                else:
                    candidates = {(d, k, e): module if b <= d else None for d in self.depths for (k, e), module in frozen.items()}
                    choices = (f"stage{stage_index}.depth", f"{prefix}.kernel", f"{prefix}.expand")
                    layers.append(CostLayer(prefix, choices, candidates, shapes[id(block)]))
        return layers

    # -- named archs and notation ------------------------------------------------------------------

    def _uniform(self, kernel: int, expand: int, depths: Sequence[int]) -> Arch:
        values: dict[str, Value] = {}
        for name in self._choices:
            stage = int(name.split(".")[0].removeprefix("stage"))
            values[name] = depths[stage - 1] if name.endswith("depth") else kernel if name.endswith("kernel") else expand
        return Arch(values)

    def named(self, name: str) -> Arch:
        """``largest``, ``smallest`` or ``mobilenet_v2`` (kernel 3, expansion 6, MobileNetV2's
        depths 2, 3, 4, 3, 3, each the nearest depth this space offers)."""
        n = len(self.widths)
        if name == "largest":
            return self._uniform(self.kernels[-1], self.expands[-1], [self.depths[-1]] * n)
        if name == "smallest":
            return self._uniform(self.kernels[0], self.expands[0], [self.depths[0]] * n)
        if name == "mobilenet_v2":
            if 3 not in self.kernels or 6 not in self.expands:
                raise InvalidArchError("mobilenet_v2 needs kernel 3 and expansion 6 among this space's candidates")
            return self._uniform(3, 6, [min(self.depths, key=lambda c: abs(c - d)) for d in _MOBILENET_V2_DEPTHS])
        raise KeyError(f"OFASpace has no named arch {name!r}; known: {', '.join(OFA_NAMES)}")

    def format(self, arch: Arch) -> str:
        """The active blocks, ``kKeE`` joined by ``-`` within a stage and ``_`` between stages."""
        self.validate(arch)
        stages = []
        for s in range(1, len(self.widths) + 1):
            depth = int(arch[f"stage{s}.depth"])  # type: ignore[arg-type]
            stages.append(
                "-".join(f"k{arch[f'stage{s}.block{b}.kernel']}e{arch[f'stage{s}.block{b}.expand']}" for b in range(1, depth + 1))
            )
        return "_".join(stages)

    def parse(self, text: str) -> Arch:
        """Read :meth:`format`'s notation (inactive blocks take the largest values), a name of
        :meth:`named`, or JSON."""
        text = text.strip()
        if text in OFA_NAMES:
            return self.named(text)
        if text.startswith("{"):
            return super().parse(text)
        stages = text.split("_")
        if len(stages) != len(self.widths):
            raise InvalidArchError(f"ofa arch {text!r} has {len(stages)} stage(s) separated by '_'; expected {len(self.widths)}")
        values = dict(self.named("largest"))
        for s, stage in enumerate(stages, start=1):
            blocks = stage.split("-")
            if len(blocks) not in self.depths:
                raise InvalidArchError(f"ofa stage {s}: {len(blocks)} blocks in {stage!r}; allowed depths: {self.depths}")
            values[f"stage{s}.depth"] = len(blocks)
            for b, block in enumerate(blocks, start=1):
                kernel, sep, expand = block.removeprefix("k").partition("e")
                if not (block.startswith("k") and sep and kernel.isdigit() and expand.isdigit()):
                    raise InvalidArchError(f"ofa stage {s}, block {b}: {block!r} must look like k5e4")
                values[f"stage{s}.block{b}.kernel"] = int(kernel)
                values[f"stage{s}.block{b}.expand"] = int(expand)
        return self.validate(Arch(values))

