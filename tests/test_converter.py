"""Search spaces generated from a user's model: rules, op choices, elastic blocks, handlers,
the ``model`` config entry, and the usability examples."""

from __future__ import annotations

import ast
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nasforge.nn as nm
from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError
from nasforge.nn.convert import (
    ORIGINAL,
    InheritWeights,
    Reinitialise,
    Slot,
    convert,
    convert_model,
    match,
    rule_from,
    transfer_weights,
)
from nasforge.objectives.basic import SingleMetric
from nasforge.runner.loop import run_search
from nasforge.strategies.random_search import RandomSearch
from nasforge.testing import SyntheticEstimator

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
USABILITY = runpy.run_path(str(EXAMPLES / "usability_resnet.py"))
SHAPE = (1, 16, 16)
OPS = ["sep_conv_3x3", "conv5x5", "mbconv_e3_k5"]


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return USABILITY["resnet"](in_channels=1, num_classes=10).eval()


def _all(space: nm.ModelSpace, value: object) -> Arch:
    return Arch({name: value for name in space.choices()})  # type: ignore[misc]


def _x() -> torch.Tensor:
    return torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1))


# -- rules -------------------------------------------------------------------------------------


def test_rule_forms_select_the_right_modules() -> None:
    model = _resnet()
    named = list(model.named_modules())

    def picked(rule: object) -> list[str]:
        fn = rule_from(rule)  # type: ignore[arg-type]
        return [path for path, module in named if path and fn(path, module)]

    assert picked("conv3x3") == [p for p, m in named if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(picked("conv3x3")) == 13 and len(picked("conv1x1")) == 2
    assert picked("BasicBlock") == picked(type(model.stages[0][0])) == [f"stages.{i}.{j}" for i in range(3) for j in range(2)]
    assert picked({"type": "Conv2d", "kernel_size": 3, "name": "stages.2.*"}) == [
        "stages.2.0.conv1", "stages.2.0.conv2", "stages.2.1.conv1", "stages.2.1.conv2"
    ]  # fmt: skip
    assert picked(lambda module: isinstance(module, nn.Linear)) == ["head"]
    assert picked(lambda path, module: path == "stem.0") == ["stem.0"]
    assert picked(match(type=nn.BatchNorm2d, name="stem.*")) == ["stem.1"]
    with pytest.raises(ConfigError, match=r"matches no module.*BasicBlock"):
        convert(model, "Bottleneck", OPS)


# -- op choices --------------------------------------------------------------------------------


def test_conversion_keeps_shapes_and_leaves_the_model_alone() -> None:
    model = _resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    space = convert(model, "conv3x3", OPS, input_shape=SHAPE)
    assert len(space.choices()) == 13
    assert all(c.candidates == (ORIGINAL, *OPS) for c in space.choices().values())
    assert type(model.stem[0]) is nn.Conv2d and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    supernet = space.supernet().eval()
    x = _x()
    for name, choice in space.choices().items():  # every candidate of every choice keeps the shape
        for value in choice.candidates:
            arch = _all(space, ORIGINAL).with_value(name, value)
            supernet.activate(arch)
            assert supernet(x).shape == (3, 10)
    rng = np.random.default_rng(0)
    for _ in range(4):
        arch = space.sample(rng)
        assert space.build(arch).eval()(x).shape == (3, 10)


def test_frozen_original_equals_the_original_model() -> None:
    model = _resnet()
    x = _x()
    expected = model(x)
    space = convert(model, "conv3x3", OPS, input_shape=SHAPE)
    original = _all(space, ORIGINAL)
    assert torch.equal(nm.freeze(space.model, original).eval()(x), expected)
    assert torch.equal(space.supernet().export(original).eval()(x), expected)
    torch.manual_seed(5)
    assert not torch.allclose(space.build(original).eval()(x), expected)  # build: fresh weights
    inheriting = convert(model, "conv3x3", OPS, input_shape=SHAPE, inherit=True)
    built = dict(inheriting.build(original).named_modules())  # fresh, but the chosen ops inherit
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            assert torch.equal(built[name].weight, module.weight), name
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.equal(built[name].running_var, torch.ones_like(module.running_var))  # not converted: reset
    blocks = convert(model, "BasicBlock", ["mbconv_e3_k3", "mbconv_e6_k5"], input_shape=SHAPE)
    assert torch.equal(nm.freeze(blocks.model, _all(blocks, ORIGINAL)).eval()(x), expected)


def test_nested_choices_follow_their_parent() -> None:
    """A block rule and a conv rule together: a block's ``original`` holds its conv choices."""
    model = _resnet()
    rule = match(name="stages.1.0*")
    space = convert(model, lambda path, m: rule(path, m) and isinstance(m, (nn.Conv2d, USABILITY["BasicBlock"])), OPS, input_shape=SHAPE)
    assert list(space.choices()) == ["stages.1.0", "stages.1.0.conv1", "stages.1.0.conv2", "stages.1.0.shortcut.0"]
    x = _x()
    assert torch.equal(nm.freeze(space.model, _all(space, ORIGINAL)).eval()(x), model(x))
    inner = _all(space, ORIGINAL).with_value("stages.1.0.conv1", "sep_conv_3x3")
    child = nm.freeze(space.model, inner)
    assert type(child.stages[1][0].conv1).__name__ == "SepConv"
    outer = _all(space, ORIGINAL).with_value("stages.1.0", "conv5x5")
    a = nm.freeze(space.model, outer).eval()
    b = nm.freeze(space.model, outer.with_value("stages.1.0.conv1", "mbconv_e3_k5")).eval()  # inactive
    assert torch.equal(a(x), b(x)) and type(a.stages[1][0]) is nn.Conv2d


def test_constraints_are_respected(tmp_path: Path) -> None:
    def few_mbconvs(arch: Arch) -> bool:
        return sum(value == "mbconv_e3_k5" for value in arch.values()) <= 1

    space = convert(_resnet(), "conv3x3", OPS, input_shape=SHAPE, constraints=[few_mbconvs])
    rng = np.random.default_rng(0)
    assert all(space.is_valid(space.sample(rng)) for _ in range(200))
    result = run_search(
        space, RandomSearch(), SyntheticEstimator(lambda arch: {"val_acc": 1.0}), SingleMetric(), budget=20, run_dir=tmp_path
    )
    assert len(result.trials) == 20 and all(few_mbconvs(t.arch) for t in result.trials)


def test_slots_are_placeholders() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = Slot(1, 8, stride=2, default="conv3x3")
            self.b = Slot(8, 8)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.b(self.a(x)))

    net = Net()
    with pytest.raises(RuntimeError, match="has no op until it is converted"):
        net(torch.zeros(1, *SHAPE))
    space = convert(net, candidates=["sep_conv_3x3", "skip_connect"])  # rule None: the slots
    assert space.choices()["a"].candidates == (ORIGINAL, "sep_conv_3x3", "skip_connect")
    assert space.choices()["b"].candidates == ("sep_conv_3x3", "skip_connect")  # no default, no original
    child = space.build(Arch({"a": ORIGINAL, "b": "skip_connect"}))
    assert type(child.a) is nn.Conv2d and child.a.stride == (2, 2) and type(child.b) is nn.Identity
    assert child(torch.zeros(2, *SHAPE)).shape == (2, 4)


def test_bad_candidates_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown candidate op 'sep_conv_3x6'. Did you mean 'sep_conv_3x3'"):
        convert(_resnet(), "conv3x3", ["sep_conv_3x6"])
    with pytest.raises(ConfigError, match=r"converting 'stages.1.0.conv1': candidate 'identity' \(8->16 channels, stride 2\)"):
        convert(_resnet(), "conv3x3", ["identity"])
    with pytest.raises(ConfigError, match=r"cannot tell the shape of 'stages.0.0'.*input_shape"):
        convert(_resnet(), "BasicBlock", ["conv3x3"])
    with pytest.raises(ConfigError, match="not both"):
        convert(_resnet(), "BasicBlock", ["conv3x3"], width=[0.5])


def test_without_input_shape_only_convs_that_keep_the_size_are_read_from_their_settings() -> None:
    """A conv whose padding shrinks H x W cannot be replaced by a candidate (they keep it) on its
    channels and stride alone; the converter asks for input_shape instead of changing shapes."""
    shrinking = nn.Sequential(nn.Conv2d(3, 8, 3, padding=0), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    with pytest.raises(ConfigError, match=r"cannot tell the shape of '0' \(Conv2d\); pass input_shape"):
        convert(shrinking, "conv3x3", ["conv3x3", "skip_connect"])
    keeping = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding="same"), nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.Conv2d(8, 8, 5, stride=2, padding=2),
    )
    space = convert(keeping, {"type": "Conv2d"}, ["conv3x3"])
    child = space.build(_all(space, "conv3x3"))
    assert child(torch.zeros(2, 3, 8, 8)).shape == keeping(torch.zeros(2, 3, 8, 8)).shape == (2, 8, 4, 4)


# -- handlers ----------------------------------------------------------------------------------


def test_handlers_hear_changes_and_freezes() -> None:
    class Recorder(nm.Handler):
        def __init__(self) -> None:
            self.events: list[tuple[str, object]] = []

        def on_choice_changed(self, choice: nm.LayerChoice, value: object) -> None:
            self.events.append(("changed", value))

        def on_freeze(self, choice: nm.LayerChoice, module: nn.Module, *, fresh: bool) -> None:
            self.events.append(("freeze", fresh))

    recorder = Recorder()
    space = convert(_resnet(), {"type": "Conv2d", "name": "stem.0"}, ["conv5x5"], handlers=[recorder])
    nm.activate(space.model, {"stem.0": ORIGINAL})  # already the value: no event
    nm.activate(space.model, {"stem.0": "conv5x5"})
    space.build(Arch({"stem.0": "conv5x5"}))
    space.supernet().export(Arch({"stem.0": ORIGINAL}))
    assert recorder.events == [("changed", "conv5x5"), ("freeze", True), ("changed", ORIGINAL), ("freeze", False)]


def test_builtin_handlers_inherit_and_reinitialise() -> None:
    original = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    bigger = nn.Conv2d(4, 6, 5, padding=2, bias=False)
    assert transfer_weights(original, bigger) == 1
    assert torch.equal(bigger.weight[:, :, 1:4, 1:4], original.weight) and bigger.weight[:, :, 0].abs().sum() == 0
    smaller = nn.Conv2d(4, 6, 1, bias=False)
    transfer_weights(bigger, smaller)
    assert torch.equal(smaller.weight[:, :, 0, 0], original.weight[:, :, 1, 1])

    model = _resnet()
    space = convert(model, {"name": "stem.0"}, ["conv5x5"], inherit=True)
    child = space.build(Arch({"stem.0": "conv5x5"}))
    assert torch.equal(child.stem[0].weight[:, :, 1:4, 1:4], model.stem[0].weight)  # the kernel, centred
    fresh = convert(model, {"name": "stem.0"}, ["conv5x5"], handlers=[Reinitialise()])
    exported = fresh.supernet().export(Arch({"stem.0": ORIGINAL}))
    assert not torch.equal(exported.stem[0].weight, model.stem[0].weight)
    assert torch.equal(exported.stem[1].weight, model.stem[1].weight)  # only the chosen op restarts
    assert isinstance(space.model.stem[0].handlers[0], InheritWeights)


# -- elastic width and depth -------------------------------------------------------------------


def test_elastic_blocks_slice_the_original() -> None:
    model = _resnet()
    space = convert(model, "BasicBlock", width=[0.5, 1.0], depth=True, input_shape=SHAPE)
    choices = space.choices()
    assert choices["stages.0.depth"].candidates == (1, 2)
    assert choices["stages.1.0.conv1.width"].candidates == (8, 16)
    assert sum(name.endswith(".width") for name in choices) == 6 and space.size() == 2**3 * 2**6
    assert space.elastic_kinds()["stages.2.depth"] == "depth" and space.elastic_kinds()["stages.2.1.conv1.width"] == "width"
    x = _x()
    largest = Arch({name: max(c.candidates) for name, c in choices.items()})  # type: ignore[type-var]
    assert torch.equal(space.supernet().export(largest).eval()(x), model(x))
    smallest = Arch({name: min(c.candidates) for name, c in choices.items()})  # type: ignore[type-var]
    child = space.supernet().export(smallest).eval()
    assert [len(stage) for stage in child.stages] == [1, 1, 1]
    assert child.stages[1][0].conv1.weight.shape == (8, 8, 3, 3)
    assert torch.equal(child.stages[1][0].conv1.weight, model.stages[1][0].conv1.weight[:8])  # inherited slice
    assert child(x).shape == (3, 10)
    with pytest.raises(ConfigError, match="none became elastic"):
        convert(model, {"name": "head"}, width=[0.5])
    with pytest.raises(ConfigError, match="holds no elastic layer"):
        convert(model, "conv3x3", OPS).elastic_kinds()


def test_differentiable_methods_search_converted_elastic_models(tmp_path: Path) -> None:
    """A converted model with an op choice and elastic widths and depths gets an ElasticSupernet:
    one-hot weights compute the single path exactly, and DARTS (the dnas estimator) searches it."""
    from nasforge.estimators.dnas import DifferentiableSupernetEstimator
    from nasforge.nn.elastic import ElasticSupernet
    from nasforge.strategies.darts import DARTS
    from nasforge.tasks.datasets import Digits

    with_op = convert_model(_resnet(), {"name": "stem.0"}, ["conv5x5"], input_shape=(1, 8, 8))
    space = convert(with_op, "BasicBlock", width=[0.5, 1.0], depth=True, input_shape=(1, 8, 8))
    supernet = space.supernet().eval()
    assert isinstance(supernet, ElasticSupernet) and space.supports("weighted")
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    for seed in range(2):
        arch = space.sample(np.random.default_rng(seed))
        supernet.activate(arch)
        with torch.no_grad():
            single = supernet(x)
            one_hot = {
                name: nn.functional.one_hot(torch.tensor(choice.index(arch[name])), len(choice)).float()
                for name, choice in space.choices().items()
            }
            supernet.set_weights(one_hot)
            torch.testing.assert_close(supernet(x), single)
    estimator = DifferentiableSupernetEstimator(space=space, batch_size=32)
    result = run_search(
        space, DARTS(epochs=2), estimator, SingleMetric(), budget=2, run_dir=tmp_path, data=Digits(train_limit=256).load(0)
    )
    assert all(t.ok for t in result.trials), [t.error for t in result.trials]


# -- the config entry --------------------------------------------------------------------------


def test_yaml_entry_builds_and_the_head_fits_the_data(tmp_path: Path) -> None:
    from nasforge.runner.config import parse_config
    from nasforge.runner.experiment import build_experiment
    from nasforge.spaces.model import UserModelSpace

    data_file = tmp_path / "mydata.py"
    data_file.write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def load():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x, y = torch.rand(60, 1, 12, 12, generator=g), torch.arange(60) % 3\n"
        "    return TensorDataset(x, y), TensorDataset(x[:12], y[:12])\n"
    )
    config = parse_config(
        {
            "data": {"type": "custom", "factory": f"{data_file}:load"},
            "space": {
                "type": "model",
                "factory": f"{EXAMPLES / 'usability_resnet.py'}:resnet",
                "convert": {"rule": "BasicBlock", "candidates": ["mbconv_e3_k3", "mbconv_e6_k5"]},
            },
            "strategy": "random",
            "estimator": {"type": "scratch", "epochs": 1},
            "budget": {"trials": 1},
        }
    )
    experiment = build_experiment(config)
    space = experiment.space
    assert isinstance(space, UserModelSpace) and len(space.choices()) == 6
    child = space.build(space.sample(np.random.default_rng(0)))
    assert child.head.out_features == 3 and child(torch.zeros(2, 1, 12, 12)).shape == (2, 3)
    elastic = UserModelSpace(
        f"{EXAMPLES / 'usability_resnet.py'}:resnet",
        convert={"rule": "BasicBlock", "depth": True},  # type: ignore[arg-type]
        in_channels=1,
        num_classes=10,
        input_size=(16, 16),
    )
    assert list(elastic.choices()) == ["stages.0.depth", "stages.1.depth", "stages.2.depth"]


def test_bad_factories_and_settings_say_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasforge.runner.config import parse_config

    def build(space: dict[str, object]) -> None:
        from nasforge.core import registry

        registry.create("space", "model", space, context={"in_channels": 1, "num_classes": 10, "input_size": (16, 16)})

    with pytest.raises(ConfigError, match=r"file .*nowhere.py does not exist"):
        build({"factory": "nowhere.py:resnet"})
    with pytest.raises(ConfigError, match=r"cannot import no_such_pkg"):
        build({"factory": "no_such_pkg.models:resnet"})
    with pytest.raises(ConfigError, match=r"has no function 'resnet50'"):
        build({"factory": f"{EXAMPLES / 'usability_resnet.py'}:resnet50"})
    with pytest.raises(ConfigError, match="holds no mutable.*add a convert section"):
        build({"factory": f"{EXAMPLES / 'usability_resnet.py'}:resnet"})
    with pytest.raises(ConfigError, match="candidatez"):
        parse_config({"space": {"type": "model", "factory": "m:f", "convert": {"candidatez": []}}, "strategy": "random",
                      "estimator": "scratch", "budget": {"trials": 1}})  # fmt: skip
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "nets.py").write_text(
        "from torch import nn\ndef net(width=4, num_classes=10):\n    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), "
        "nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)  # a module path importable from the working directory
    build({"factory": "userpkg.nets:net", "options": {"width": 6}, "convert": {"rule": "conv3x3", "candidates": ["conv5x5"]}})


def test_a_type_error_inside_the_factory_is_not_blamed_on_the_options(tmp_path: Path) -> None:
    from nasforge.spaces.model import build_user_model

    nets = tmp_path / "nets.py"
    nets.write_text("from torch import nn\ndef net(width=4):\n    return nn.Conv2d(1, width, 3, padding=None + 1)\n")
    with pytest.raises(TypeError, match="NoneType"):  # the user's bug, with its own traceback
        build_user_model(f"{nets}:net", {}, {})
    with pytest.raises(ConfigError, match=r"does not take the options \['depth'\]"):
        build_user_model(f"{nets}:net", {"depth": 2}, {})


def test_the_users_model_is_built_with_seeded_weights_whatever_the_global_rng() -> None:
    """The same config gives the same network (and inherited children) in every run."""
    from nasforge.spaces.model import UserModelSpace

    def space(seed: int) -> UserModelSpace:
        torch.manual_seed(seed)  # what came before in the process
        return UserModelSpace(
            f"{EXAMPLES / 'usability_resnet.py'}:resnet",
            convert={"rule": "BasicBlock", "candidates": ["mbconv_e3_k3"], "inherit": True},  # type: ignore[arg-type]
            in_channels=1,
            num_classes=10,
            input_size=(16, 16),
        )

    first, second = space(1), space(2)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()))
    torch.manual_seed(3)
    expected = torch.rand(1)
    space(3)
    assert torch.equal(torch.rand(1), expected)  # the caller's global stream is left as it was


# -- the usability examples --------------------------------------------------------------------


def test_line_counts_meet_the_targets_and_the_doc_is_current() -> None:
    counter = runpy.run_path(str(EXAMPLES / "count_lines.py"))
    counts = counter["count"]()
    assert all(counts[setup]["space"] < 10 and counts[setup]["python"] == 0 for setup in "ABC")
    doc = (REPO / "docs" / "usability.md").read_text()
    assert counter["table"]() in doc, "docs/usability.md is stale: run python examples/count_lines.py --write"
    tree = ast.parse((EXAMPLES / "usability_resnet.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("nasforge") for name in imported)  # the model is plain PyTorch


@pytest.mark.parametrize("setup", ["a", "b", "c"])
def test_usability_examples_run_quick_on_digits(
    setup: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NASFORGE_DATA_DIR", str(tmp_path / "no-data"))  # no Fashion-MNIST: digits
    launcher = runpy.run_path(str(EXAMPLES / "run_usability.py"))
    assert launcher["main"]([setup, "--quick", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "falling back to the bundled digits" in out and "best arch:" in out


@pytest.mark.slow
@pytest.mark.parametrize("setup", ["a", "b", "c"])
def test_usability_examples_run_quick_on_fashion_mnist(
    setup: str, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    launcher = runpy.run_path(str(EXAMPLES / "run_usability.py"))
    assert launcher["main"]([setup, "--quick", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "data: Fashion-MNIST" in out and "best arch:" in out
