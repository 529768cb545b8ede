"""Model size and cost counters: parameters, multiply-accumulates (MACs) and FLOPs.

``count_macs`` and ``count_flops`` run one forward pass in eval mode on a zero tensor of batch
size 1, with a forward hook on every module, and add up a per-module rule. Only work done inside
modules is seen: functional calls in a ``forward`` (``x + y``, ``F.relu``) count nothing.

MACs are the multiply-accumulates of convolutions and linear layers, nothing else. FLOPs follow
torchstat's rules, which NASLib used (through tensorwatch) for the FLOPs of its NAS-Bench-201
zero-cost table, so ``count_flops`` reproduces that table exactly:

* convolution: one per multiply-accumulate, plus one per output element for a bias;
* linear: one per multiply-accumulate (the bias is not counted);
* batch norm: one per element, two with an affine scale and shift;
* element-wise activations (ReLU, ReLU6, Hardswish, Sigmoid, ...): one per element;
* pooling with a kernel: the kernel's size per output element (a 3x3 average pool adds 9);
* adaptive pooling: per output element, the size of its window grown by one in each
  dimension (for global pooling of an ``HxW`` map, ``(H+1)(W+1)`` per channel);
* anything else (identity, zero, dropout, reshaping): nothing.

Counts scale with the batch, and a module called twice is counted twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["count_params", "count_macs", "count_flops"]

_Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor], int]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
)
_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_ADAPTIVE_POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; a shared parameter counts once)."""
    return sum(p.numel() for p in model.parameters())


def _conv_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    assert isinstance(module, (*_CONVS, *_TRANSPOSED_CONVS))
    per_pair = math.prod(module.kernel_size) * module.in_channels * module.out_channels // module.groups
    # A convolution pairs each output position with a kernel window; a transposed one pairs
    # each input position with one.
    positions = (out if isinstance(module, _CONVS) else inp).shape
    return per_pair * out.shape[0] * math.prod(positions[2:])


def _linear_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    assert isinstance(module, nn.Linear)
    return out.numel() * module.in_features


def _conv_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    bias = out.numel() if getattr(module, "bias", None) is not None else 0
    return _conv_macs(module, inp, out) + bias


def _norm_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    assert isinstance(module, _NORMS)
    return inp.numel() * (2 if module.affine else 1)


def _elementwise_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    return inp.numel()


def _pool_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    assert isinstance(module, _POOLS)
    kernel = module.kernel_size
    dims = inp.dim() - 2
    window = math.prod(kernel) if isinstance(kernel, Sequence) else kernel**dims
    return out.numel() * window


def _adaptive_pool_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    per_plane = 1
    for size_in, size_out in zip(inp.shape[2:], out.shape[2:], strict=True):
        # Window k spans [floor(k * in / out), ceil((k + 1) * in / out)); each counts its length + 1.
        per_plane *= sum(-(-(k + 1) * size_in // size_out) - k * size_in // size_out + 1 for k in range(size_out))
    return math.prod(out.shape[:2]) * per_plane


_MAC_RULES: tuple[tuple[tuple[type[nn.Module], ...], _Rule], ...] = (
    ((*_CONVS, *_TRANSPOSED_CONVS), _conv_macs),
    ((nn.Linear,), _linear_macs),
)

_FLOP_RULES: tuple[tuple[tuple[type[nn.Module], ...], _Rule], ...] = (
    ((*_CONVS, *_TRANSPOSED_CONVS), _conv_flops),
    ((nn.Linear,), _linear_macs),
    (_NORMS, _norm_flops),
    (_ACTIVATIONS, _elementwise_flops),
    (_POOLS, _pool_flops),
    (_ADAPTIVE_POOLS, _adaptive_pool_flops),
)


def _count(
    model: nn.Module, input_shape: Sequence[int], rules: tuple[tuple[tuple[type[nn.Module], ...], _Rule], ...]
) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    like = tensors[0] if tensors else torch.empty(0)
    dtype = like.dtype if like.is_floating_point() else torch.float32
    x = torch.zeros((1, *input_shape), dtype=dtype, device=like.device)
    total = 0

    def hook(rule: _Rule) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            nonlocal total
            total += int(rule(module, inputs[0], output))

        return record

    handles = []
    for module in model.modules():
        rule = next((rule for types, rule in rules if isinstance(module, types)), None)
        if rule is not None:
            handles.append(module.register_forward_hook(hook(rule)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of the convolutions and linear layers for one input.

    Args:
        model: the network; it is run once in eval mode (its mode is restored afterwards).
        input_shape: the shape of one input without the batch dimension, e.g. ``(3, 32, 32)``.
    """
    return _count(model, input_shape, _MAC_RULES)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs for one input, counted per module by the rules in this module's docstring.

    Args:
        model: the network; it is run once in eval mode (its mode is restored afterwards).
        input_shape: the shape of one input without the batch dimension, e.g. ``(3, 32, 32)``.
    """
    return _count(model, input_shape, _FLOP_RULES)
