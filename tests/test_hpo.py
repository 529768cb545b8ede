"""Hyperparameters as choices (with_hparams, hpo, params spaces), augmentation, and the command estimator."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.errors import ConfigError, InvalidArchError
from nasforge.core.estimator import Context
from nasforge.core.seeding import seeded
from nasforge.core.trial import TrialStatus
from nasforge.estimators.command import CommandEstimator, CommandFailed
from nasforge.objectives.basic import SingleMetric
from nasforge.runner.loop import run_search
from nasforge.spaces.hparams import apply_hparams, architecture_of, hparams_of
from nasforge.tasks.augment import augment_batch, random_crop, random_flip
from nasforge.tasks.datasets import Digits
from nasforge.tasks.training import TrainSettings
from nasforge.testing import SyntheticEstimator, drive
from nasforge.testing.conformance import make_strategy, objective_for

DIGITS = {"in_channels": 1, "num_classes": 10, "input_size": (8, 8)}
CELL = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"


def with_hparams(**options: Any) -> Any:
    inner = options.pop("inner", {"type": "nb201", "C": 4, "N": 1})
    return registry.create("space", "with_hparams", {"inner": inner, **options}, context=DIGITS)


# -- spaces ------------------------------------------------------------------------------------


def test_with_hparams_adds_choices_that_build_ignores() -> None:
    space = with_hparams(hparams={"lr": [0.01, "1e-1"], "batch_size": [32, 64], "augment": ["none", "crop_flip"]})
    assert list(space.choices())[-3:] == ["hp.lr", "hp.batch_size", "hp.augment"]
    assert space.choices()["hp.lr"].candidates == (0.01, 0.1)  # YAML's "1e-1" string checked and converted
    assert space.size() == 5**6 * 8
    arch = space.sample(np.random.default_rng(0))
    assert space.parse(space.format(arch)) == arch and space.parse(str(arch)) == arch
    assert space.format(arch).startswith('{"arch": "|')
    inner_net = space.inner.build(architecture_of(arch))
    net = space.build(arch)
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in inner_net.named_parameters()]
    assert set(hparams_of(arch)) == {"lr", "batch_size", "augment"}


def test_pinned_arch_leaves_only_hyperparameters() -> None:
    space = with_hparams(hparams={"lr": [0.01, 0.1]}, arch=CELL)
    assert list(space.choices()) == ["hp.lr"] and space.size() == 2
    arch = Arch({"hp.lr": 0.1})
    assert space.format(arch) == '{"hp.lr": 0.1}' and space.parse(space.format(arch)) == arch
    assert space.inner.format(space.inner_arch(arch)) == CELL
    with pytest.raises(InvalidArchError, match="pinned"):
        space.parse('{"arch": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "hp.lr": 0.1}')


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"lrr": [0.1]}, "'lrr' is not a training hyperparameter; tunable: epochs, batch_size, lr"),
        ({"lr": [-1.0]}, "hparams.lr value -1.0 is invalid"),
        ({"augment": ["rotate"]}, "'none', 'flip', 'crop' or 'crop_flip'"),
        ({"lr": []}, "needs a non-empty list"),
        ({}, "`hparams` is empty"),
    ],
)
def test_bad_hyperparameters_are_config_errors(hparams: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        with_hparams(hparams=hparams)


def test_apply_hparams_validates_the_combination() -> None:
    settings = apply_hparams(TrainSettings(epochs=3), {"lr": 0.2, "augment": "crop"})
    assert settings.lr == 0.2 and settings.augment == "crop" and settings.epochs == 3
    with pytest.raises(ValueError, match="warmup_epochs=3 must be fewer than epochs=2"):
        apply_hparams(TrainSettings(epochs=3, warmup_epochs=1), {"epochs": 2, "warmup_epochs": 3})


def test_hpo_space_builds_a_users_model(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n"
        "def make(in_channels, num_classes, hidden=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, hidden), nn.Linear(hidden, num_classes))\n"
    )
    space = registry.create(
        "space", "hpo", {"model": f"{tmp_path}/nets.py:make", "model_options": {"hidden": 5}, "hparams": {"lr": [0.1, 0.2]}},
        context=DIGITS,
    )
    net = space.build(Arch({"hp.lr": 0.2}))
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10) and net[1].out_features == 5


def test_params_space_has_no_network() -> None:
    space = registry.create("space", "params", {"choices": {"lr": [0.1, 0.2], "act": ["relu", "gelu"]}})
    assert space.size() == 4 and space.choices()["lr"].ordered and not space.choices()["act"].ordered
    with pytest.raises(ConfigError, match="cannot be built"):
        space.build(Arch({"lr": 0.1, "act": "relu"}))
    with pytest.raises(ConfigError, match="duplicate"):
        registry.create("space", "params", {"choices": {"lr": [0.1, 0.1]}})


def _hp_score(arch: Arch) -> dict[str, float]:
    acc = 50.0 + 10 * (arch["op"] == "b") + {0.01: 0.0, 0.1: 5.0, 1.0: -5.0}[float(arch["hp.lr"])] + int(arch["hp.epochs"])
    return {"val_acc": acc, "latency_ms": float(arch["hp.epochs"])}


def _wrapped_space() -> Any:
    return with_hparams(inner={"type": "params", "choices": {"op": ["a", "b", "c"]}}, hparams={"lr": [0.01, 0.1, 1.0], "epochs": [1, 2]})


@pytest.mark.parametrize("name", registry.names("strategy"))
def test_every_strategy_searches_the_wrapped_space(name: str) -> None:
    """Every strategy that fits a space without a supernet (all but the differentiable ones, which
    are refused up front) searches the hyperparameters with the arch."""
    from nasforge.core.capabilities import combination_problem

    space = _wrapped_space()
    if (problem := combination_problem(space, name)) is not None:
        assert "supernet" in problem  # the runner refuses it before any data loads
        return
    trials = drive(make_strategy(name), space, objective_for(name), SyntheticEstimator(_hp_score), 20, seed=0)
    assert trials, f"{name} asked nothing"
    for trial in trials:
        space.validate(trial.arch)
        assert {"hp.lr", "hp.epochs"} <= set(trial.arch)


# -- the scratch estimator reads the arch's hyperparameters --------------------------------------


def test_search_over_lr_reaches_the_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    sgd = torch.optim.SGD

    class RecordingSGD(sgd):  # type: ignore[misc, valid-type]
        def __init__(self, params: Any, lr: float, **kwargs: Any) -> None:
            seen.append(lr)
            super().__init__(params, lr=lr, **kwargs)

    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    data = Digits(train_limit=200).load(seed=0)
    space = with_hparams(hparams={"lr": [0.01, 0.2]}, arch=CELL)
    estimator = registry.create("estimator", "scratch", {"epochs": 1, "lr": 0.05})
    strategy = registry.create("strategy", "grid", {})
    result = run_search(space, strategy, estimator, SingleMetric("val_acc"), budget=2, data=data)
    assert sorted(seen) == [0.01, 0.2]  # not the estimator's own 0.05
    assert [t.extras["hparams"]["lr"] for t in result.trials] == [t.arch["hp.lr"] for t in result.trials]


# -- augmentation --------------------------------------------------------------------------------


def test_augmentations_keep_shapes_and_are_seeded() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    for policy in ("none", "flip", "crop", "crop_flip"):
        with seeded(1):
            first = augment_batch(images, policy)
        with seeded(1):
            again = augment_batch(images, policy)
        assert first.shape == images.shape and torch.equal(first, again)
    with seeded(0):
        flipped = random_flip(images.repeat(16, 1, 1, 1))
    as_is = [torch.equal(f, images[i % 2]) for i, f in enumerate(flipped)]
    mirrored = [torch.equal(f, images[i % 2].flip(2)) for i, f in enumerate(flipped)]
    assert all(a or m for a, m in zip(as_is, mirrored)) and any(as_is) and any(mirrored)
    with seeded(0):
        cropped = random_crop(images, padding=1)
    for original, crop in zip(images, cropped):  # a shifted window: interior values come from the original
        assert set(crop[crop != 0].tolist()) <= set(original.flatten().tolist())
    assert any(not torch.equal(c, o) for c, o in zip(cropped, images))  # some window did shift
    with pytest.raises(ValueError, match="allowed: none, flip, crop, crop_flip"):
        augment_batch(images, "cutout")


# -- the command estimator -------------------------------------------------------------------------

SCRIPT = """
import json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
if args.get("mode") == "fail":
    print("about to fail"); print("bad things", file=sys.stderr); sys.exit(3)
if args.get("mode") == "sleep":
    time.sleep(30)
print("epoch 1 val_acc=10.0")
print(f"epoch 2 val_acc={float(args['lr']) * 100} loss=0.5")
print(json.dumps({"val_acc": float(args["lr"]) * 100, "seed": int(os.environ["NASFORGE_TRIAL_SEED"]),
                  "cwd_ok": os.path.exists("marker.txt"), "name": args.get("name", "")}))
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(SCRIPT)
    (tmp_path / "marker.txt").write_text("")
    return tmp_path


def command(script: Path, extra: str = "", **options: Any) -> CommandEstimator:
    space = registry.create("space", "params", {"choices": {"lr": [0.1, 0.5], "mode": ["ok", "fail", "sleep"], "name": ["a b"]}})
    cmd = f"{{python}} train.py lr={{lr}} mode={{mode}} {extra}"
    return registry.create("estimator", "command", {"cmd": cmd, "cwd": str(script), **options}, context={"space": space})


def test_command_metric_by_regex_and_extras(script: Path) -> None:
    estimator = command(script, metric_regex={"val_acc": r"val_acc=([0-9.]+)", "loss": r"loss=([0-9.]+)"})
    result = estimator.estimate(Arch({"lr": 0.5, "mode": "ok", "name": "a b"}), Context(space=None, seed=7))  # type: ignore[arg-type]
    assert result.metrics == {"val_acc": 50.0, "loss": 0.5}  # the last match counts
    assert result.extras["returncode"] == 0 and '"seed": 7' in result.extras["stdout_tail"]
    assert result.extras["command"].startswith(sys.executable) and "lr=0.5" in result.extras["command"]


def test_command_metrics_from_final_json_line_with_seed_cwd_and_one_argument_per_value(script: Path) -> None:
    estimator = command(script, extra="name={name}")
    result = estimator.estimate(Arch({"lr": 0.1, "mode": "ok", "name": "a b"}), Context(space=None, seed=11))  # type: ignore[arg-type]
    assert result.metrics == {"val_acc": 10.0, "seed": 11.0}  # numeric entries only
    assert '"cwd_ok": true' in result.extras["stdout_tail"] and '"name": "a b"' in result.extras["stdout_tail"]


@pytest.mark.parametrize(
    ("mode", "options", "message"),
    [
        ("fail", {}, "exited with status 3.*about to fail.*bad things"),
        ("ok", {"metric_regex": r"top1=([0-9.]+)"}, "printed no val_acc"),
        ("sleep", {"timeout_s": 0.5}, "timed out after 0.5 s"),
    ],
)
def test_command_failures_carry_the_output(script: Path, mode: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandFailed, match=f"(?s){message}"):
        command(script, **options).estimate(Arch({"lr": 0.1, "mode": mode, "name": "a b"}), Context(space=None))  # type: ignore[arg-type]


def test_failed_commands_fail_their_trial_and_the_search_goes_on(script: Path) -> None:
    space = registry.create("space", "params", {"choices": {"lr": [0.1, 0.5], "mode": ["ok", "fail"]}})
    estimator = registry.create(
        "estimator", "command", {"cmd": "{python} train.py lr={lr} mode={mode}", "cwd": str(script)}, context={"space": space}
    )
    result = run_search(space, registry.create("strategy", "grid", {}), estimator, SingleMetric("val_acc"), budget=4)
    failed = [t for t in result.trials if t.status is TrialStatus.FAILED]
    assert len(result.trials) == 4 and len(failed) == 2
    assert all("bad things" in (t.error or "") for t in failed)
    assert result.best(1)[0].arch == Arch({"lr": 0.5, "mode": "ok"})


def test_command_placeholders_are_checked_up_front(script: Path) -> None:
    space = registry.create("space", "params", {"choices": {"lr": [0.1]}})
    with pytest.raises(ConfigError, match=r"\{width\}, which is no choice of the space; usable: lr, seed, python"):
        registry.create("estimator", "command", {"cmd": "train --width {width}"}, context={"space": space})
    with pytest.raises(ConfigError, match="needs a group"):
        registry.create("estimator", "command", {"cmd": "train", "metric_regex": "val_acc"})


def test_command_that_leaves_a_background_child_is_read_when_it_exits_and_the_child_is_killed(tmp_path: Path) -> None:
    """Its output is read once the command exits (not once every holder of its output has), and
    what it left running is killed with its session."""
    (tmp_path / "leave.py").write_text(
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(20)'])\n"
        "print(f'child={child.pid} val_acc=0.5')\n"
    )
    estimator = registry.create(
        "estimator", "command", {"cmd": "{python} leave.py", "cwd": str(tmp_path), "metric_regex": "val_acc=([0-9.]+)", "timeout_s": 3}
    )
    start = time.perf_counter()
    result = estimator.estimate(Arch({}), Context(space=None))  # type: ignore[arg-type]
    assert result.metrics == {"val_acc": 0.5} and time.perf_counter() - start < 2.5
    stat = Path(f"/proc/{result.extras['stdout_tail'].split('child=')[1].split()[0]}/stat")
    for _ in range(40):  # killed: gone, or a zombie where nobody reaps orphans
        if not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the command's background child is still running")


def test_command_metric_that_is_not_a_number_names_the_command_and_metric() -> None:
    estimator = registry.create("estimator", "command", {"cmd": "echo val_acc=1.2.3", "metric_regex": "val_acc=([0-9.]+)"})
    with pytest.raises(CommandFailed, match=r"`echo val_acc=1.2.3` reported val_acc = '1.2.3', which is not a number"):
        estimator.estimate(Arch({}), Context(space=None))  # type: ignore[arg-type]
