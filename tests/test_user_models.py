"""The user's own model (issue #15): untraceable blocks and head widths caught when the space is
built, inherited weights, elastic mobile-style models, dense-only conv rules, the NNI mutables
API (float choices, arithmetic, n_chosen, groups/dilation/affine, Repeat) and train-mode export."""

from __future__ import annotations

import logging
import runpy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

import nasforge.nn as nm
from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.export import export_model
from nasforge.nn.convert import convert

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHAPE = (3, 16, 16)


def _x(shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))


class HSwish(nn.Module):
    """A user-defined activation (parameter-free, channel-wise)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3) / 6


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 4, groups: int | None = None) -> None:
        super().__init__()
        hidden = c_in * expand
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), HSwish(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=groups or hidden, bias=False), nn.BatchNorm2d(hidden), HSwish(),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )  # fmt: skip
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def mobile(num_classes: int = 10, groups: int | None = None) -> nn.Module:
    """MobileNet-style: one flat nn.Sequential of a stem, inverted residuals and a head conv."""
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), HSwish()),
        InvertedResidual(16, 16, 1, groups=groups),
        InvertedResidual(16, 24, 2, groups=groups),
        InvertedResidual(24, 24, 1, groups=groups),
        InvertedResidual(24, 24, 1, groups=groups),
        nn.Conv2d(24, 32, 1),
    )
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes)).eval()


# -- point 10: untraceable models fail when the space is built --------------------------------


class RatioBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = int(x.size(1) * 0.5)  # not traceable: a shape through int()
        return self.conv(x)[:, :keep].repeat(1, 2, 1, 1)


def untraceable(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        RatioBlock(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


def test_an_untraceable_block_fails_when_the_space_is_built_naming_module_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(
        ConfigError, match=r"module '1' \(RatioBlock\).*test_user_models.py:\d+: `keep = int\(x.size\(1\) \* 0.5\)"
    ):
        convert(untraceable(), "conv3x3", ["conv5x5"])
    from nasforge.cli.parser import main

    config = {
        "data": "digits",
        "space": {
            "type": "model",
            "factory": f"{__file__}:untraceable",
            "convert": {"rule": "conv3x3", "candidates": ["conv5x5"]},
        },
        "strategy": "random",
        "estimator": {"type": "scratch", "epochs": 1},
        "budget": {"trials": 1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["search", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "RatioBlock" in err and "torch.fx" in err


# -- point 11: the head must fit the data -------------------------------------------------------


def fixed_head(in_channels: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )


def test_a_head_wider_or_narrower_than_the_classes_is_named_up_front() -> None:
    from nasforge.spaces.model import UserModelSpace

    with pytest.raises(ConfigError, match="10 classes per example, but the data has 3 classes"):
        convert(mobile(10), "InvertedResidual", width=[0.5], input_shape=SHAPE, num_classes=3)
    options = {"in_channels": 1, "num_classes": 4, "input_size": (8, 8)}
    with pytest.raises(ConfigError, match="10 classes per example, but the data has 4 classes"):
        UserModelSpace(f"{__file__}:fixed_head", convert={"rule": "conv3x3", "candidates": ["conv5x5"]}, **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="but the data has 4 classes"):
        UserModelSpace(f"{__file__}:fixed_head", **options)  # type: ignore[arg-type]


# -- point 12: inherit keeps every unmatched weight --------------------------------------------


def test_inherit_keeps_the_stem_and_head_of_a_pretrained_model() -> None:
    model = mobile()
    space = convert(model, "InvertedResidual", ["mbconv_e3_k3"], inherit=True, input_shape=SHAPE)
    child = space.build(Arch({name: "original" for name in space.choices()})).eval()
    torch.testing.assert_close(child(_x()), model(_x()))
    assert torch.equal(child[3].weight, model[3].weight) and torch.equal(child[0][0][0].weight, model[0][0][0].weight)
    other = space.build(Arch({name: "mbconv_e3_k3" for name in space.choices()}))
    assert torch.equal(other[3].weight, model[3].weight)  # the head is kept whatever the ops
    plain = convert(model, "InvertedResidual", ["mbconv_e3_k3"], input_shape=SHAPE)
    assert not torch.equal(plain.build(Arch({name: "original" for name in plain.choices()}))[3].weight, model[3].weight)


# -- point 13: elastic mobile-style models -----------------------------------------------------


def test_elastic_width_and_depth_on_a_mobilenet_style_model() -> None:
    model = mobile()
    space = convert(model, "InvertedResidual", width=[0.5, 1.0], depth=True, input_shape=SHAPE)
    choices = space.choices()
    assert choices["0.1.conv.0.width"].candidates == (32, 64)  # through the depthwise conv and HSwish
    assert sum(name.endswith(".width") for name in choices) == 4
    assert choices["0.2.depth"].candidates == (1, 2, 3)  # blocks 2-4 of the flat sequence
    largest = Arch({name: max(c.candidates) for name, c in choices.items()})  # type: ignore[type-var]
    torch.testing.assert_close(space.supernet().export(largest).eval()(_x()), model(_x()))
    smallest = Arch({name: min(c.candidates) for name, c in choices.items()})  # type: ignore[type-var]
    child = space.supernet().export(smallest).eval()
    depthwise = child[0][1].conv[3]
    assert depthwise.weight.shape == (32, 1, 3, 3) and depthwise.groups == 32
    assert torch.equal(depthwise.weight, model[0][1].conv[3].weight[:32])
    assert child(_x()).shape == (2, 10)
    assert space.elastic_kinds()["0.2.depth"] == "depth"


def test_when_nothing_becomes_elastic_the_blocker_is_named() -> None:
    with pytest.raises(ConfigError, match=r"What blocked it: .*0.1.conv.3 is grouped \(groups=2 of 64 channels"):
        convert(mobile(groups=2), "InvertedResidual", width=[0.5])


# -- point 14: conv3x3 means dense convs; a conversion that multiplies the parameters warns -----


def test_conv3x3_matches_dense_convs_only_and_growth_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    model = mobile()
    with caplog.at_level(logging.WARNING, logger="nasforge.nn.convert"):
        space = convert(model, "conv3x3", ["sep_conv_3x3"], input_shape=SHAPE)
    assert list(space.choices()) == ["0.0.0"]  # the stem, not the depthwise convs
    assert not caplog.records
    dense = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    with caplog.at_level(logging.WARNING, logger="nasforge.nn.convert"):
        convert(dense, {"name": "1"}, ["conv7x7"])
    assert "the largest child has" in caplog.text and "'1' -> 'conv7x7'" in caplog.text


# -- point 16: the NNI mutables API -------------------------------------------------------------


class Everything(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        w = nm.ValueChoice([8, 16], label="w")
        self.stem = nm.Conv2d(3, w, 3, padding=1)
        self.wide = nm.Conv2d(w, w * 2, 1)  # a derived width
        self.bn = nm.BatchNorm2d(w * 2, affine=False)
        self.dw = nm.Conv2d(w * 2, w * 2, 3, padding="same", dilation=2, groups=w * 2)
        self.narrow = nm.Conv2d(w * 2, w // 2 + 4, 1)
        self.drop = nm.Dropout(p=nm.ValueChoice([0.0, 0.2, 0.5], label="drop"))
        self.scale = nm.ValueChoice([0.5, 1.0], label="scale")  # a plain float choice, read in forward
        self.pick = nm.InputChoice(3, label="pick", n_chosen=2, reduction="mean")
        self.head = nm.Linear(w // 2 + 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.dw(self.bn(self.wide(x)))
        z = self.narrow(y)
        z = self.pick([z, z * 2, z * 3]) * float(self.scale)
        return self.head(self.drop(z.mean((2, 3))))


def test_the_nni_mutables_api_searches_and_freezes(tmp_path: Path) -> None:
    model = Everything()
    space = nm.ModelSpace(model)
    choices = space.choices()
    assert list(choices) == ["w", "pick", "drop", "scale"] or set(choices) == {"w", "pick", "drop", "scale"}
    assert choices["drop"].candidates == (0.0, 0.2, 0.5) and choices["pick"].candidates == ("0,1", "0,2", "1,2")
    arch = Arch({"w": 8, "drop": 0.2, "scale": 0.5, "pick": "0,2"})
    supernet = space.supernet().eval()
    supernet.activate(arch)
    child = nm.freeze(model, arch).eval()
    x = _x()
    torch.testing.assert_close(child(x), supernet(x))
    assert child.wide.out_channels == 16 and child.narrow.out_channels == 8 and child.head.in_features == 8
    assert child.dw.groups == 16 and child.dw.dilation == (2, 2) and child.dw.padding == (2, 2)
    assert not child.bn.affine and type(child.drop) is nn.Dropout and child.drop.p == 0.2 and child.scale == 0.5
    assert not any(isinstance(m, nm.Mutable) for m in child.modules())
    export_model(child, x, tmp_path / "child")  # exports as plain PyTorch


def test_mutables_say_what_is_wrong() -> None:
    with pytest.raises(TypeError, match=r"is a choice, not a number.*nasforge.nn.Conv2d"):
        nn.Conv2d(3, nm.ValueChoice([8, 16], label="w"), 3)
    with pytest.raises(ValueError, match="not a width"):
        nm.Repeat(lambda width: nn.Conv2d(width, width, 3), (1, 3), label="d")
    copies = nm.Repeat(nn.Conv2d(4, 4, 3, padding=1), (1, 2), label="d")
    assert len(copies.blocks) == 2 and copies.blocks[0].weight is not copies.blocks[1].weight
    with pytest.raises(ValueError, match="n_chosen"):
        nm.InputChoice(2, label="i", n_chosen=3)


# -- point 17: the exported model trains like the original --------------------------------------


class DropNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.training:  # drop-connect
            y = y * (torch.rand_like(y[:, :1, :1, :1]) > 0.3).float() / 0.7
        return self.head(F.dropout(y.mean((2, 3)), 0.5, self.training))


def test_the_exported_model_applies_dropout_in_train_mode_like_the_original(tmp_path: Path) -> None:
    model = DropNet()
    x = _x()
    export_model(model, x, tmp_path / "out")
    exported = runpy.run_path(str(tmp_path / "out" / "model.py"))["load"]()
    torch.manual_seed(5)
    expected = model.train()(x)
    torch.manual_seed(5)
    got = exported.train()(x)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, exported.eval()(x))  # dropout acts in train mode
