"""The mutables API: choices by label, freeze/export, OFA slicing, Repeat, nesting, constraints."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nasforge.nn as nm
from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.objectives.basic import SingleMetric
from nasforge.runner.loop import run_search
from nasforge.strategies.evolution import RegularizedEvolution
from nasforge.strategies.random_search import RandomSearch
from nasforge.testing import SyntheticEstimator

torch.set_num_threads(1)


class Net(nn.Module):
    """Op choice with a nested kernel choice, shared width, a Repeat and an input choice."""

    def __init__(self) -> None:
        super().__init__()
        width = nm.ValueChoice([8, 16], label="width")
        self.stem = nn.Sequential(nm.Conv2d(1, width, 3, padding="same"), nm.BatchNorm2d(width), nn.ReLU())
        self.blocks = nm.Repeat(
            lambda i: nm.LayerChoice(
                {
                    "conv": nm.Conv2d(width, width, nm.ValueChoice([3, 5], label=f"k{i}"), padding="same"),
                    "pool": nn.MaxPool2d(3, 1, 1),
                },
                label=f"op{i}",
            ),
            depth=(1, 2),
            label="depth",
        )
        self.skip = nm.InputChoice(2, label="skip")
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nm.Linear(width, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        return self.head(self.skip([self.blocks(stem), stem]))


def _net() -> Net:
    torch.manual_seed(0)
    return Net()


def test_choices_are_collected_by_label_in_order() -> None:
    choices = nm.ModelSpace(_net()).choices()
    assert list(choices) == ["width", "depth", "op0", "k0", "op1", "k1", "skip"]
    assert choices["width"].candidates == (8, 16) and choices["width"].ordered
    assert choices["op0"].candidates == ("conv", "pool")
    assert choices["depth"].candidates == (1, 2)
    assert choices["skip"].candidates == (0, 1)


def test_same_label_with_other_candidates_is_refused() -> None:
    model = nn.Sequential(
        nm.Linear(4, nm.ValueChoice([2, 4], label="w")), nm.Linear(nm.ValueChoice([2, 3], label="w"), 2)
    )
    with pytest.raises(ValueError, match="'w' is used with different candidates"):
        nm.ModelSpace(model)


def test_list_layer_choice_uses_indices() -> None:
    space = nm.ModelSpace(nm.LayerChoice([nn.ReLU(), nn.Tanh()], label="act"))
    assert space.choices()["act"].candidates == (0, 1)
    assert isinstance(space.build(Arch({"act": 1})), nn.Tanh)


def test_export_equals_supernet_path_and_is_plain() -> None:
    space = nm.ModelSpace(_net())
    supernet = space.supernet()
    x = torch.randn(4, 1, 8, 8)
    rng = np.random.default_rng(0)
    for _ in range(8):
        arch = space.sample(rng)
        supernet.eval()
        supernet.activate(arch)
        expected = supernet(x)
        child = supernet.export(arch).eval()
        assert not any(isinstance(m, nm.Mutable) for m in child.modules())
        assert len(child.blocks) == arch["depth"]
        torch.testing.assert_close(child(x), expected, atol=1e-5, rtol=1e-5)
        torch.fx.symbolic_trace(child)  # the user's forward is traceable, so the child is too
        assert not set(map(id, child.parameters())) & set(map(id, supernet.parameters()))


def test_build_is_fresh_and_seeded() -> None:
    space = nm.ModelSpace(_net())
    arch = space.sample(np.random.default_rng(1))
    torch.manual_seed(3)
    a = space.build(arch)
    torch.manual_seed(3)
    b = space.build(arch)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_width_slice_equals_plain_conv() -> None:
    conv = nm.Conv2d(3, nm.ValueChoice([16, 32], label="w"), nm.ValueChoice([3, 5, 7], label="k"), padding="same")
    nm.activate(conv, {"w": 16, "k": 3})
    plain = nn.Conv2d(3, 16, 3, padding=1)
    with torch.no_grad():
        plain.weight.copy_(conv.weight[:16, :, 2:5, 2:5])
        plain.bias.copy_(conv.bias[:16])
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(conv(x), plain(x))
    frozen = nm.freeze(conv, {"w": 16, "k": 3})
    assert type(frozen) is nn.Conv2d and frozen.weight.shape == (16, 3, 3, 3) and frozen.padding == (1, 1)
    torch.testing.assert_close(frozen(x), plain(x))


def test_linear_and_batchnorm_slices() -> None:
    width = nm.ValueChoice([4, 8], label="w")
    bn = nm.BatchNorm2d(width)
    bn.train()
    nm.activate(bn, {"w": 4})
    bn(torch.randn(5, 4, 3, 3) + 2)
    assert bn.running_mean[:4].abs().sum() > 0 and bn.running_mean[4:].abs().sum() == 0
    bn.eval()
    frozen = nm.freeze(bn, {"w": 4})
    x = torch.randn(2, 4, 3, 3)
    assert type(frozen) is nn.BatchNorm2d and not frozen.training
    torch.testing.assert_close(frozen(x), bn(x))
    linear = nm.Linear(width, 3)
    nm.activate(linear, {"w": 4})
    torch.testing.assert_close(nm.freeze(linear, {"w": 4})(torch.ones(1, 4)), linear(torch.ones(1, 4)))


def test_repeat_depth() -> None:
    repeat = nm.Repeat(lambda i: nn.Linear(3, 3), depth=nm.ValueChoice([1, 2, 3], label="d"))
    x = torch.randn(2, 3)
    nm.activate(repeat, {"d": 2})
    torch.testing.assert_close(repeat(x), repeat.blocks[1](repeat.blocks[0](x)))
    frozen = nm.freeze(repeat, {"d": 2})
    assert isinstance(frozen, nn.Sequential) and len(frozen) == 2
    with pytest.raises(ValueError, match="needs a label"):
        nm.Repeat(lambda i: nn.ReLU(), depth=(1, 2))


def test_nested_choice_matters_only_when_active() -> None:
    space = nm.ModelSpace(_net())
    base = Arch({"width": 8, "depth": 1, "op0": "pool", "k0": 3, "op1": "conv", "k1": 3, "skip": 0})
    x = torch.randn(2, 1, 8, 8)
    torch.manual_seed(0)
    a = space.build(base).eval()
    torch.manual_seed(0)
    b = space.build(base.replace(k0=5, k1=5)).eval()  # k0 under an unpicked op, k1 beyond the depth
    torch.testing.assert_close(a(x), b(x))
    child = space.build(base.replace(op0="conv", k0=5))
    assert child.blocks[0].kernel_size == (5, 5)


def test_constraints_hold_for_samples_mutations_and_evolution(tmp_path: Path) -> None:
    def small(arch: Arch) -> bool:
        return not (arch["width"] == 16 and arch["depth"] == 2)

    space = nm.ModelSpace(_net(), constraints=[small, lambda arch: arch["op0"] == "conv" or arch["k0"] == 3])
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    for _ in range(300):
        assert space.is_valid(space.sample(rng))
        arch = space.mutate(arch, rng)
        assert space.is_valid(arch)
    with pytest.raises(Exception, match="breaks a constraint"):
        space.validate(Arch({"width": 16, "depth": 2, "op0": "conv", "k0": 3, "op1": "conv", "k1": 3, "skip": 0}))

    def score(arch: Arch) -> dict[str, float]:
        return {"val_acc": float(arch["width"]) + 10.0 * float(arch["depth"]) + (arch["op0"] == "conv")}

    for strategy in (RegularizedEvolution(population_size=4, sample_size=2), RandomSearch()):
        result = run_search(
            space,
            strategy,
            SyntheticEstimator(score),
            SingleMetric(),
            budget=25,
            run_dir=tmp_path / type(strategy).__name__,
        )
        assert len(result.trials) == 25 and all(t.ok and space.is_valid(t.arch) for t in result.trials)


def test_weighted_mode_is_refused_with_value_layers() -> None:
    only_ops = nm.ModelSpace(nn.Sequential(nm.LayerChoice({"a": nn.ReLU(), "b": nn.Tanh()}, label="act")))
    assert only_ops.supports("weighted")
    only_ops.require("weighted", by="strategy 'darts'")
    space = nm.ModelSpace(_net())
    assert space.supports("single") and not space.supports("weighted")
    with pytest.raises(ConfigError, match=r"strategy 'darts' mixes candidates.*Conv2d at 'stem.0' \(width\)"):
        space.require("weighted", by="strategy 'darts'")
    with pytest.raises(ConfigError, match="set_weights"):
        space.supernet().set_weights({name: torch.ones(len(c)) for name, c in space.choices().items()})


def test_weighted_mode_mixes_layer_choices() -> None:
    space = nm.ModelSpace(nn.Sequential(nm.LayerChoice({"a": nn.ReLU(), "b": nn.Tanh()}, label="act")))
    supernet = space.supernet()
    supernet.set_weights({"act": torch.tensor([0.25, 0.75])})
    x = torch.randn(3)
    torch.testing.assert_close(supernet(x), 0.25 * torch.relu(x) + 0.75 * torch.tanh(x))


def test_quickstart_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(Path(__file__).parents[1] / "examples" / "mutables_quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "best arch:" in out and "Conv2d" in out and "ValueChoice" not in out


def test_one_shot_supernet_estimator_on_digits(tmp_path: Path) -> None:
    from nasforge.estimators.supernet import SupernetEstimator
    from nasforge.tasks.datasets import Digits

    for rule in ("spos", "fairnas"):
        space = nm.ModelSpace(_net())
        estimator = SupernetEstimator(rule=rule, epochs=1, batch_size=32, space=space)
        result = run_search(
            space,
            RandomSearch(),
            estimator,
            SingleMetric(),
            budget=3,
            run_dir=tmp_path / rule,
            data=Digits(train_limit=200).load(0),
        )
        assert [t.ok for t in result.trials] == [True] * 3, [t.error for t in result.trials]


def test_dnas_rejects_a_model_space_without_weighted_mode_up_front() -> None:
    """The dnas estimator refuses, at construction, a model whose ValueChoice layers cannot mix."""
    from torch import nn

    from nasforge.core.errors import ConfigError
    from nasforge.estimators.dnas import DifferentiableSupernetEstimator
    from nasforge.nn import Conv2d, ModelSpace, ValueChoice

    net = nn.Sequential(Conv2d(1, ValueChoice([4, 8], label="width"), 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ConfigError, match="estimator 'dnas'"):
        DifferentiableSupernetEstimator(space=ModelSpace(net))
