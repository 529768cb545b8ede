"""Blockwise spaces: a MobileNetV2-style macro skeleton whose layers each pick a block.

The skeleton (Sandler et al., CVPR 2018) is a strided stem convolution, stages of layers
(``width``, ``depth``, ``stride`` of the first layer), a final 1x1 convolution, global average
pooling and a linear classifier. A *layer-wise* space (ProxylessNAS, FBNet, SPOS) gives every layer
its own choice ``"layer1"``, ``"layer2"``, ... over blocks; archs print as the block names joined
by ``-``, e.g. ``k5_e6-skip-k3_e1_g2-...`` (the notation of the HELP latency tables).

Blocks (:mod:`nasforge.nn.blocks`): :class:`MBConv` (inverted residual with kernel, expansion, grouped 1x1 convolutions with
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
from nasforge.nn.mixed import MixedOp, Supernet

__all__ = [
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
        """Every layer a :class:`MixedOp` named ``"layerI"`` over its candidate blocks."""
        return Supernet(
            self.network(
                [
                    MixedOp(f"layer{i}", {v: self.block(v, s.c_in, s.c_out, s.stride) for v in s.candidates})
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
