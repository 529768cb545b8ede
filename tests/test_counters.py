"""Params, MACs and FLOPs counters against counts worked out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasforge.nn.counters import count_flops, count_macs, count_params
from nasforge.nn.ops import OPS, FactorizedReduce, ReLUConvBN, ResNetBasicBlock, Zero


def test_conv_with_bias() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_params(conv) == 8 * 3 * 9 + 8
    macs = 8 * 16 * 16 * (3 * 9)  # output elements x (input channels x kernel window)
    assert count_macs(conv, (3, 16, 16)) == macs
    assert count_flops(conv, (3, 16, 16)) == macs + 8 * 16 * 16  # plus one add per output for the bias


def test_strided_conv_without_bias() -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, bias=False)  # 9x9 -> 4x4
    assert count_macs(conv, (4, 9, 9)) == count_flops(conv, (4, 9, 9)) == 6 * 4 * 4 * (4 * 9)


def test_depthwise_and_grouped_conv() -> None:
    depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
    assert count_params(depthwise) == 16 * 9
    assert count_macs(depthwise, (16, 8, 8)) == 16 * 8 * 8 * 9  # one input channel per output
    grouped = nn.Conv2d(8, 16, 1, groups=4, bias=False)
    assert count_macs(grouped, (8, 5, 5)) == 16 * 5 * 5 * 2  # 8 / 4 input channels per output


def test_transposed_conv() -> None:
    deconv = nn.ConvTranspose2d(4, 2, 2, stride=2, bias=False)  # each input pixel meets 4 * 2 weights
    assert count_macs(deconv, (4, 3, 3)) == 3 * 3 * 4 * 2 * 4


def test_linear() -> None:
    linear = nn.Linear(20, 5)
    assert count_params(linear) == 105
    assert count_macs(linear, (20,)) == 100
    assert count_flops(linear, (20,)) == 100  # NB201's convention leaves the bias out


@pytest.mark.parametrize(
    ("module", "flops"),
    [
        (nn.BatchNorm2d(4), 2 * 4 * 5 * 5),  # scale and shift
        (nn.BatchNorm2d(4, affine=False), 4 * 5 * 5),
        (nn.ReLU(), 100),
        (nn.ReLU6(), 100),
        (nn.Hardswish(), 100),
        (nn.Sigmoid(), 100),
        (nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), 4 * 5 * 5 * 9),
        (nn.MaxPool2d(2), 4 * 2 * 2 * 4),
        (nn.AdaptiveAvgPool2d(1), 4 * 6 * 6),  # (H + 1)(W + 1) per channel
        (nn.Identity(), 0),
        (Zero(4, 4), 0),
    ],
)
def test_elementwise_work(module: nn.Module, flops: int) -> None:
    assert count_flops(module, (4, 5, 5)) == flops
    assert count_macs(module, (4, 5, 5)) == 0


def test_adaptive_pool_windows() -> None:
    # 5 -> 2 gives windows [0, 3) and [2, 5): lengths 3 and 3, counted as 4 and 4 per dimension.
    assert count_flops(nn.AdaptiveAvgPool2d(2), (1, 5, 5)) == (4 + 4) * (4 + 4)


def test_nb201_ops() -> None:
    op = ReLUConvBN(16, 16, 3, 1, 1)
    elements = 16 * 32 * 32
    assert count_macs(op, (16, 32, 32)) == elements * 16 * 9
    assert count_flops(op, (16, 32, 32)) == elements + elements * 16 * 9 + 2 * elements
    assert count_flops(OPS["avg_pool_3x3"](16, 16, 1), (16, 32, 32)) == 9 * elements
    assert count_flops(OPS["skip_connect"](16, 16, 1), (16, 32, 32)) == 0
    block = ResNetBasicBlock(16, 32, stride=2)
    out = 32 * 16 * 16
    convs = out * 16 * 9 + out * 32 * 9 + out * 16  # conv_a, conv_b, 1x1 shortcut
    assert count_macs(block, (16, 32, 32)) == convs
    pool = 16 * 16 * 16 * 4
    assert count_flops(block, (16, 32, 32)) == convs + elements + out + 2 * 2 * out + pool  # ReLUs, BNs
    reduce = FactorizedReduce(16, 32)
    assert count_macs(reduce, (16, 32, 32)) == out * 16


def test_mobilenet_block_sums_its_parts() -> None:
    block = nn.Sequential(
        nn.Conv2d(8, 48, 1, bias=False),
        nn.BatchNorm2d(48),
        nn.ReLU6(),
        nn.Conv2d(48, 48, 5, stride=2, padding=2, groups=48, bias=False),
        nn.BatchNorm2d(48),
        nn.Hardswish(),
        nn.Conv2d(48, 16, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    expand, mid, out = 48 * 16 * 16, 48 * 8 * 8, 16 * 8 * 8
    macs = expand * 8 + mid * 25 + out * 48 + 16 * 10
    assert count_macs(block, (8, 16, 16)) == macs
    assert count_flops(block, (8, 16, 16)) == macs + 3 * expand + 3 * mid + 2 * out + 16 * 9 * 9


def test_counting_leaves_the_model_as_it_was() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, (1, 6, 6))
    count_macs(model, (1, 6, 6))
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # eval mode: no BN update


def test_a_module_called_twice_counts_twice() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x))

    assert count_params(Twice()) == 4
    assert count_macs(Twice(), (2, 3, 3)) == 2 * (2 * 9 * 2)


def test_counts_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert count_flops(model, (3, 5, 5)) == 4 * 3 * 3 * 27 + 4 * 3 * 3 * 2
