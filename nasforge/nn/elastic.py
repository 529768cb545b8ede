"""Elastic layers: one set of weights serving every kernel size, width and depth of a network.

The mechanism of once-for-all networks (Cai et al. 2020, "Once-for-All: Train One Network and
Specialize it for Efficient Deployment", ICLR) and of ModularNAS' elastic groups, written as
mutables (:mod:`nasforge.nn.mutables`), so any user model can hold them and become a
:class:`~nasforge.nn.model_space.ModelSpace`; each elastic dimension is a
:class:`~nasforge.core.arch.Choice` of the space, named by its label:

- **elastic kernel** (:class:`ElasticConv2d` with ``kernel_size`` a ``ValueChoice``): the largest
  kernel is stored; a smaller one is the centre of the next larger one times a learned
  *kernel transformation matrix* (``25 x 25`` for 7 -> 5, ``9 x 9`` for 5 -> 3, shared by all
  channels of the layer, initialised to the identity), applied in turn: a 3x3 kernel is
  ``T(5->3) . centre(T(7->5) . centre(W7))``.
- **elastic width** (channels a :class:`WidthChoice` or ``ValueChoice``): the first ``c``
  channels of the largest layer run. Modules tie to one width by sharing the choice object
  (a *spatial group*): producers slice their output channels, channel-wise modules (batch norm,
  depthwise convolution) their only dimension, consumers their input channels.
  :func:`reorganize_channels` sorts a group's channels by importance (the L1 norm of the
  consumers' weights on each channel, as OFA's code) so that the narrow subnets keep the most
  important ones; OFA calls it before training with a smaller width.
- **elastic expansion**: a :class:`WidthChoice` whose values are expansion ratios of an inverted
  bottleneck (``WidthChoice.expansion``: ratio ``r`` -> ``make_divisible(r * c_in)`` channels).
- **elastic depth** (:class:`ElasticSequential`, a *sequential group*): the first ``d`` blocks
  of a stage run.

Batch norm (:class:`ElasticBatchNorm2d`) keeps one set of statistics for the largest width; a
narrow subnet normalises with, and updates, their leading slice. Freezing an arch
(:func:`nasforge.nn.mutables.freeze`, which ``MutableSupernet.export`` calls) turns every elastic
layer into the plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` it computes, weights included.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import skip_init

from nasforge.core.arch import Choice, Value
from nasforge.nn.mutable_layers import BatchNorm2d
from nasforge.nn.mutables import (
    Mixable,
    Mutable,
    MutableSupernet,
    Repeat,
    ValueChoice,
    ValueLayer,
    activate,
    collect_choices,
    filled,
)

__all__ = [
    "make_divisible",
    "WidthChoice",
    "ElasticConv2d",
    "ElasticBatchNorm2d",
    "ElasticSequential",
    "ElasticSupernet",
    "Width",
    "elastic_kinds",
    "reorganize_channels",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """``value`` rounded to a multiple of ``divisor``, never below 90% of it (MobileNet's rule)."""
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class WidthChoice:
    """An elastic channel count whose choice values map to widths (e.g. ratio 6 -> 96 channels).

    Duck-compatible with :class:`~nasforge.nn.mutables.ValueChoice` (``choice``, ``label``,
    ``current``), so mutables set it from an arch; ``current`` is the picked value and
    :attr:`size` the channels it stands for.

    Args:
        label: the choice name.
        sizes: choice value -> number of channels, increasing with the value.
    """

    def __init__(self, label: str, sizes: Mapping[int, int]) -> None:
        values = sorted(sizes)
        widths = [sizes[v] for v in values]
        if widths != sorted(widths) or min(widths) < 1:
            raise ValueError(f"WidthChoice {label!r}: widths must be positive and grow with the value, got {dict(sizes)}")
        self.choice = Choice(label, tuple(values), ordered=True)
        self.sizes = dict(sizes)
        self.current: int = values[-1]

    @classmethod
    def expansion(cls, label: str, ratios: Sequence[int], channels: int, divisor: int = 8) -> WidthChoice:
        """The hidden width of an inverted bottleneck: ratio ``r`` -> ``make_divisible(r * channels)``."""
        return cls(label, {int(r): make_divisible(r * channels, divisor) for r in ratios})

    @property
    def label(self) -> str:
        return self.choice.name

    @property
    def size(self) -> int:
        """Channels of the current pick."""
        return self.sizes[self.current]

    @property
    def largest(self) -> int:
        """Channels of the largest pick (what the layers allocate)."""
        return max(self.sizes.values())

    def __repr__(self) -> str:
        return f"WidthChoice({self.sizes}, label={self.label!r})"


#: A channel count: fixed, a ValueChoice of counts, or a WidthChoice.
Width = int | ValueChoice | WidthChoice


def _channels(width: Width) -> int:
    if isinstance(width, WidthChoice):
        return width.size
    return width.current if isinstance(width, ValueChoice) else width


def _max_channels(width: Width) -> int:
    return width.largest if isinstance(width, (WidthChoice, ValueChoice)) else width


def _elastic(*values: object) -> list[ValueChoice | WidthChoice]:
    return [v for v in values if isinstance(v, (ValueChoice, WidthChoice))]


class ElasticConv2d(nn.Conv2d, ValueLayer):
    """A convolution with elastic kernel size, input and output channels ("same" padding).

    Args:
        in_channels, out_channels: widths (ints, or choices shared with the layers around).
        kernel_size: an odd int, or a ``ValueChoice`` of odd kernel sizes (elastic kernel).
        stride: the stride.
        depthwise: one filter per channel (``groups = channels``); ``out_channels`` must then be
            ``in_channels``.
        bias: add a bias.
        kernel_transform: smaller kernels go through OFA's learned transformation matrices;
            False takes the plain centre of the largest kernel.
    """

    def __init__(
        self,
        in_channels: Width,
        out_channels: Width,
        kernel_size: int | ValueChoice = 1,
        stride: int = 1,
        depthwise: bool = False,
        bias: bool = False,
        kernel_transform: bool = True,
    ) -> None:
        if depthwise and out_channels is not in_channels:
            raise ValueError("a depthwise ElasticConv2d keeps its width: pass the same width as in and out channels")
        kernels = sorted(int(k) for k in kernel_size.choice.candidates) if isinstance(kernel_size, ValueChoice) else [kernel_size]
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"ElasticConv2d: kernel sizes must be odd to share one centred kernel, got {kernels}")
        c_in, c_out = _max_channels(in_channels), _max_channels(out_channels)
        super().__init__(c_in, c_out, kernels[-1], stride, kernels[-1] // 2, groups=c_in if depthwise else 1, bias=bias)
        self.in_choice, self.out_choice, self.kernel_choice = in_channels, out_channels, kernel_size
        self.depthwise = depthwise
        self.kernel_mix: Tensor | None = None  # weighted mode: one weight per kernel candidate
        self.kernel_steps = list(zip(kernels[:0:-1], kernels[-2::-1]))  # (7, 5), (5, 3)
        self.transforms = nn.ParameterDict(
            {f"{big}to{small}": nn.Parameter(torch.eye(small * small)) for big, small in self.kernel_steps}
            if kernel_transform
            else {}
        )

    def value_choices(self) -> list[ValueChoice | WidthChoice]:  # type: ignore[override]
        return _elastic(self.in_choice, self.out_choice, self.kernel_choice)

    def active_kernel(self) -> int:
        """The kernel size in use (the largest in weighted mode)."""
        if self.kernel_mix is not None:
            return self.kernel_size[0]
        return int(self.kernel_choice.current if isinstance(self.kernel_choice, ValueChoice) else self.kernel_choice)

    def _weight_for(self, kernel: int) -> Tensor:
        """The channel-sliced weight of ``kernel``, transformed down from the largest kernel."""
        c_out = _channels(self.out_choice)
        weight = self.weight[:c_out] if self.depthwise else self.weight[:c_out, : _channels(self.in_choice)]
        for big, small in self.kernel_steps:
            if small < kernel:
                break
            start = (big - small) // 2
            weight = weight[:, :, start : start + small, start : start + small]
            key = f"{big}to{small}"
            if key in self.transforms:
                shape = weight.shape
                weight = F.linear(weight.reshape(-1, small * small), self.transforms[key]).reshape(shape)
        return weight

    def active_weight(self) -> Tensor:
        """The weight the current setting runs; mixed (weighted mode), the candidates' kernels
        zero-padded to the largest and summed by their weights."""
        if self.kernel_mix is None:
            return self._weight_for(self.active_kernel())
        largest = self.kernel_size[0]
        kernels = [int(k) for k in self.kernel_choice.choice.candidates]  # type: ignore[union-attr]
        return sum(
            w * F.pad(self._weight_for(k), [(largest - k) // 2] * 4) for w, k in zip(self.kernel_mix, kernels, strict=True)
        )  # type: ignore[return-value]

    def set_arch(self, arch: Mapping[str, Value]) -> None:
        self.kernel_mix = None
        super().set_arch(arch)

    def mix(self, weights: Mapping[str, Tensor]) -> None:
        """Weighted mode: mix the kernel candidates by ``weights[kernel label]`` (if given)."""
        if isinstance(self.kernel_choice, ValueChoice):
            self.kernel_mix = weights.get(self.kernel_choice.label)

    def _bias(self) -> Tensor | None:
        return None if self.bias is None else self.bias[: _channels(self.out_choice)]

    def forward(self, x: Tensor) -> Tensor:
        groups = _channels(self.in_choice) if self.depthwise else 1
        return F.conv2d(x, self.active_weight(), self._bias(), self.stride, self.active_kernel() // 2, 1, groups)

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        weight, bias, k = self.active_weight(), self._bias(), self.active_kernel()
        c_in, c_out = _channels(self.in_choice), _channels(self.out_choice)
        conv = skip_init(nn.Conv2d, c_in, c_out, k, self.stride, k // 2, groups=c_in if self.depthwise else 1, bias=bias is not None)
        return filled(conv, {"weight": weight, "bias": bias}, self.training)

    # -- channel sorting ---------------------------------------------------------------------------

    def channel_importance(self, width: Width) -> Tensor | None:
        """L1 norm of the weights reading each channel of ``width`` (None: this layer reads none)."""
        if self.depthwise or self.in_choice is not width:
            return None
        return self.weight.detach().abs().sum(dim=(0, 2, 3))

    def permute_channels(self, width: Width, order: Tensor) -> None:
        """Reorder the channels of ``width`` this layer produces or reads."""
        with torch.no_grad():
            if self.out_choice is width:
                self.weight.copy_(self.weight[order])
                if self.bias is not None:
                    self.bias.copy_(self.bias[order])
            elif self.in_choice is width:
                self.weight.copy_(self.weight[:, order])


class ElasticBatchNorm2d(BatchNorm2d):
    """Batch norm over an elastic width: affine parameters and running statistics are the leading
    slice of the largest width's, updated in place (so every width keeps its own statistics of
    the channels it shares with the others); :class:`~nasforge.nn.mutables.BatchNorm2d` taking a
    :class:`WidthChoice` too, with a weighted mode."""

    def __init__(self, num_features: Width, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(_max_channels(num_features), eps, momentum)
        self.features_choice = num_features  # type: ignore[assignment]
        self.width_mix: Tensor | None = None  # weighted mode: one weight per width candidate

    def value_choices(self) -> list[ValueChoice | WidthChoice]:  # type: ignore[override]
        return _elastic(self.features_choice)

    def channels(self) -> int:
        return _channels(self.features_choice)

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        if self.width_mix is None:
            return y
        assert isinstance(self.features_choice, (ValueChoice, WidthChoice))
        sizes = _sizes(self.features_choice, self.features_choice.choice.candidates)
        channels = torch.arange(y.shape[1], device=y.device)
        mask = sum(w * (channels < size).to(y.dtype) for w, size in zip(self.width_mix, sizes, strict=True))
        return y * mask[:, None, None]  # type: ignore[index]

    def set_arch(self, arch: Mapping[str, Value]) -> None:
        self.width_mix = None
        super().set_arch(arch)

    def mix(self, weights: Mapping[str, Tensor]) -> None:
        """Weighted mode: mask the channels beyond each width candidate, mixed by
        ``weights[width label]`` (FBNetV2's channel masking), if given."""
        if isinstance(self.features_choice, (ValueChoice, WidthChoice)):
            self.width_mix = weights.get(self.features_choice.label)

    def channel_importance(self, width: Width) -> Tensor | None:
        return None

    def permute_channels(self, width: Width, order: Tensor) -> None:
        if self.features_choice is not width:
            return
        with torch.no_grad():
            for tensor in (self.weight, self.bias, self.running_mean, self.running_var):
                tensor.copy_(tensor[order])  # type: ignore[index]


class ElasticSequential(nn.Module, Mutable):
    """Elastic depth (ModularNAS' sequential group): the first ``depth`` of ``blocks`` run.

    Args:
        blocks: the blocks of the largest depth, in order.
        depth: a ``ValueChoice`` of depths, each at most ``len(blocks)``.
    """

    def __init__(self, blocks: Sequence[nn.Module], depth: ValueChoice) -> None:
        super().__init__()
        if depth.largest > len(blocks):
            raise ValueError(f"ElasticSequential {depth.label!r}: depth {depth.largest} exceeds the {len(blocks)} blocks given")
        self.blocks = nn.ModuleList(blocks)
        self.depth = depth
        self.depth_mix: Tensor | None = None  # weighted mode: one weight per depth candidate

    def mutable_choices(self) -> list[Choice]:
        return [self.depth.choice]

    def set_arch(self, arch: Mapping[str, Value]) -> None:
        self.depth_mix = None
        self.depth.current = int(arch[self.depth.label])  # type: ignore[arg-type]

    def mix(self, weights: Mapping[str, Tensor]) -> None:
        """Weighted mode: the outputs after each candidate depth, summed by ``weights[depth label]``."""
        self.depth_mix = weights.get(self.depth.label)

    def forward(self, x: Tensor) -> Tensor:
        if self.depth_mix is None:
            for block in self.blocks[: self.depth.current]:
                x = block(x)
            return x
        mixed = {int(d): w for d, w in zip(self.depth.choice.candidates, self.depth_mix, strict=True)}
        out: Tensor | None = None
        for d, block in enumerate(self.blocks[: self.depth.largest], start=1):
            x = block(x)
            if d in mixed:
                out = mixed[d] * x if out is None else out + mixed[d] * x
        assert out is not None
        return out

    def frozen(self, memo: dict[int, object]) -> nn.Module:
        return nn.Sequential(*(copy.deepcopy(block, memo) for block in self.blocks[: self.depth.current]))


class ElasticSupernet(MutableSupernet):
    """A network of elastic layers as a supernet: single path as any mutable model, and a
    *weighted* mode for methods that mix candidates by differentiable weights (e.g. SGNAS'
    architecture generator): every layer runs at its largest, kernels are the weighted sum of
    the candidates' (zero-padded) kernels, widths mask the channels beyond each candidate, depths
    sum the outputs after each candidate depth (FBNetV2-style superposition); op choices
    (LayerChoice, InputChoice, e.g. of a converted model) mix as in any supernet. With one-hot
    weights it computes the single path, except that a squeeze-excite's reduced width stays at
    its largest. :meth:`~nasforge.nn.model_space.ModelSpace.supernet` builds one for any model
    holding elastic layers.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__(network)
        self._largest = {name: max(choice.candidates) for name, choice in collect_choices(network).items()}  # type: ignore[type-var]
        self._mixing = [m for m in network.modules() if isinstance(m, Mixable)]

    def set_weights(self, weights: Mapping[str, Tensor]) -> None:
        """Every layer at its largest, elastic ones mixed by ``weights``, and the network's
        LayerChoices and InputChoices (a converted model's op choices) mixed as in any supernet."""
        activate(self.network, self._largest)
        super().set_weights(weights)
        for module in self._mixing:
            module.mix(weights)


_Channelled = ElasticConv2d | ElasticBatchNorm2d


def _channelled(network: nn.Module) -> Iterator[_Channelled]:
    for module in network.modules():
        if isinstance(module, (ElasticConv2d, ElasticBatchNorm2d)):
            yield module


def _widths(module: _Channelled) -> list[ValueChoice | WidthChoice]:
    if isinstance(module, ElasticConv2d):
        return _elastic(module.in_choice, module.out_choice)
    return _elastic(module.features_choice)


#: What an elastic dimension changes.
Kind = Literal["kernel", "depth", "width"]


def elastic_kinds(network: nn.Module) -> dict[str, Kind]:
    """Each elastic choice of ``network`` by label: ``kernel``, ``depth`` or ``width``."""
    kinds: dict[str, Kind] = {}
    for module in network.modules():
        if isinstance(module, (ElasticSequential, Repeat)):
            kinds[module.depth.label] = "depth"
        if isinstance(module, ElasticConv2d) and isinstance(module.kernel_choice, ValueChoice):
            kinds[module.kernel_choice.label] = "kernel"
        if isinstance(module, (ElasticConv2d, ElasticBatchNorm2d)):
            kinds.update((width.label, "width") for width in _widths(module))
    return kinds


def _sizes(width: ValueChoice | WidthChoice, values: Sequence[Value]) -> list[int]:
    if isinstance(width, WidthChoice):
        return [width.sizes[int(v)] for v in values]  # type: ignore[arg-type]
    return [int(v) for v in values]  # type: ignore[arg-type]


def reorganize_channels(network: nn.Module, trained: Mapping[str, Sequence[Value]] | None = None) -> int:
    """Sort every elastic width's channels by importance, most important first (OFA).

    A channel's importance is the L1 norm of the weights of the layers reading it (summed over
    those layers); a width no layer reads keeps its order. Producers, batch norms and readers are
    permuted alike, so the network computes the same function. ``trained`` maps a width's label
    to values already trained as narrower subnets: channels are then sorted only within the
    bands those widths delimit, so a narrow subnet trained before keeps its channels (OFA's
    ``expand_ratio_stage``).

    Returns:
        the number of widths reordered.
    """
    groups: dict[int, tuple[ValueChoice | WidthChoice, list[_Channelled]]] = {}
    for module in _channelled(network):
        for width in _widths(module):
            groups.setdefault(id(width), (width, []))[1].append(module)
    sorted_groups = 0
    for width, members in groups.values():
        scores = [s for s in (m.channel_importance(width) for m in members) if s is not None]
        if not scores:
            continue
        importance = torch.stack(scores).sum(dim=0)
        bands = sorted({0, *_sizes(width, (trained or {}).get(width.label, ())), len(importance)})
        order = torch.cat(
            [lo + torch.argsort(importance[lo:hi], descending=True, stable=True) for lo, hi in zip(bands, bands[1:])]
        )
        for module in members:
            module.permute_channels(width, order)
        sorted_groups += 1
    return sorted_groups

