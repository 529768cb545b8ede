"""Bad input ends with exit status 2 and one message naming the value and what is allowed (#15,
points 4-8 and 15): non-finite metrics, objectives reading metrics no estimator reports,
failing user data, unwritable exports, a full disk, conflicting options, out-of-range numbers,
and nested choices that cannot change the network."""

from __future__ import annotations

import errno
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from torch import nn

from nasforge.cli import main
from nasforge.core.arch import Arch, Choice
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context, Estimator
from nasforge.core.registry import create
from nasforge.core.space import SearchSpace
from nasforge.core.trial import Result, TrialStatus
from nasforge.objectives.basic import SingleMetric
from nasforge.runner.loop import STORE_FILE, run_search
from nasforge.runner.store import TrialStore
from nasforge.strategies.random_search import RandomSearch

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 1,
    "threads": 1,
    "data": {"type": "digits", "train_limit": 200, "test_limit": 60},
    "space": {"type": "nb201", "C": 4, "N": 1},
    "strategy": {"type": "random"},
    "estimator": {"type": "scratch", "epochs": 1, "batch_size": 64},
    "budget": {"trials": 2},
    "train": {"epochs": 1},
}


def write_config(folder: Path, config: dict[str, Any] | str = TINY, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def fails_cleanly(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI, expect exit 2 and one error message without a traceback; return it."""
    capsys.readouterr()
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err, err
    return err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny search with its winner trained (``final/``), shared by the CLI tests."""
    folder = tmp_path_factory.mktemp("run")
    assert main(["search", str(write_config(folder)), "--run-dir", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


# -- point 4: non-finite metrics fail the trial ---------------------------------------------------


class Line(SearchSpace):
    """Four archs ``{"x": 0..3}`` with no network (for loop-level tests)."""

    def choices(self) -> dict[str, Choice]:
        return {"x": Choice("x", (0, 1, 2, 3))}

    def build(self, arch: Arch) -> nn.Module:
        return nn.Identity()


class NanAtThree(Estimator):
    reports = frozenset({"val_acc"})

    def estimate(self, arch: Arch, ctx: Context) -> Result:
        x = int(arch["x"])
        return Result(metrics={"val_acc": math.nan if x == 3 else (math.inf if x == 0 else float(x))})


def test_non_finite_metrics_fail_the_trial_and_never_win() -> None:
    result = run_search(Line(), RandomSearch(), NanAtThree(), SingleMetric("val_acc"), budget=4, seed=0)
    by_x = {int(t.arch["x"]): t for t in result.trials}
    assert len(by_x) == 4  # the search went on after the failures
    for x in (0, 3):
        assert by_x[x].status is TrialStatus.FAILED and not by_x[x].ok
        assert "non-finite" in (by_x[x].error or "") and "val_acc" in (by_x[x].error or "")
    assert [int(t.arch["x"]) for t in result.best(4)] == [2, 1]


# -- point 5: objective metrics checked against what the estimator reports -----------------------


def test_estimators_declare_their_metrics(tmp_path: Path) -> None:
    from nasforge.core.estimator import check_reported_metrics

    scratch = create("estimator", "scratch", {"epochs": 1})
    assert {"val_acc", "params", "flops"} <= scratch.reported_metrics()
    assert "val_metric" not in scratch.reported_metrics()
    command = create("estimator", "command", {"cmd": "echo", "metric_regex": "acc=([0-9.]+)", "metric": "acc"})
    assert command.reported_metrics() == {"acc"}
    json_command = create("estimator", "command", {"cmd": "echo"})
    assert json_command.reported_metrics() is None  # metrics from a JSON line: unknown, not checked
    assert create("estimator", "predictor", {"metrics": ["val_acc", "flops"]}).reported_metrics() == {"val_acc", "flops"}
    with pytest.raises(ConfigError, match="val_acx"):
        create("estimator", "predictor", {"metrics": ["val_acx"]})  # its teacher (scratch) does not report it
    check_reported_metrics(json_command, SingleMetric("anything"))  # unknown metrics pass
    with pytest.raises(ConfigError, match="'val_accc'.*Did you mean 'val_acc'"):
        check_reported_metrics(scratch, SingleMetric("val_accc"))
    with pytest.raises(ConfigError, match="'latency'"):
        check_reported_metrics(scratch, SingleMetric("val_acc", constraints=[{"metric": "latency", "max": 1}]))


@pytest.mark.parametrize(
    "objective",
    [
        {"type": "single", "metric": "val_accc"},
        {"type": "single", "metric": "val_acc", "constraints": [{"metric": "parms", "max": 1000}]},
    ],
)
def test_misspelt_objective_metric_fails_before_training_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], objective: dict[str, Any]
) -> None:
    config = write_config(tmp_path, {**TINY, "objective": objective})
    run = tmp_path / "run"
    for _ in range(2):  # the same command again says the same, not "already holds a search"
        err = fails_cleanly(capsys, "search", str(config), "--run-dir", str(run), "--quiet")
        bad = objective.get("constraints", [{}])[0].get("metric", objective["metric"])
        assert repr(bad) in err and "It reports:" in err
        assert not run.exists()


def test_run_that_never_started_leaves_no_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {**TINY, "data": {"type": "mnist", "data_dir": str(tmp_path / "nowhere")}})
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    fails_cleanly(capsys, "search", str(config), "--run-dir", str(tmp_path / "run"), "--quiet")
    assert not (tmp_path / "run").exists()
    fails_cleanly(capsys, "search", str(config), "--run-dir", str(existing), "--quiet")
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]  # what was there stays


# -- point 6: failing user data, unwritable exports, a full disk ----------------------------------

BAD_DATA = '''
import torch

class Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            raise IndexError("sample 2 is corrupt")
        return torch.zeros(1, 8, 8), 0

def raising():
    raise RuntimeError("the data server is down")

def broken_items():
    return Broken(), Broken()
'''


@pytest.mark.parametrize(("function", "expected"), [("raising", "the data server is down"), ("broken_items", "sample 2 is corrupt")])
def test_failing_data_factory_or_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str], function: str, expected: str) -> None:
    (tmp_path / "bad_data.py").write_text(BAD_DATA)
    factory = f"{tmp_path / 'bad_data.py'}:{function}"
    config = write_config(tmp_path, {**TINY, "data": {"type": "custom", "factory": factory}})
    err = fails_cleanly(capsys, "search", str(config), "--run-dir", str(tmp_path / "run"), "--quiet")
    assert expected in err and function in err
    if function == "broken_items":
        assert "[2]" in err
    assert not (tmp_path / "run").exists()


def test_export_onto_a_file_is_refused(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "model.out"
    target.write_text("keep me")
    err = fails_cleanly(capsys, "export", str(run_dir / "final"), "-o", str(target))
    assert str(target) in err and "folder" in err
    assert target.read_text() == "keep me"


def test_export_into_a_read_only_folder(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nasforge.export

    def denied(path: Any, data: bytes) -> None:  # what a read-only folder does (tests may run as root)
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(nasforge.export, "atomic_write_bytes", denied)
    err = fails_cleanly(capsys, "export", str(run_dir / "final"), "-o", str(tmp_path / "ro"))
    assert "Permission denied" in err and str(tmp_path / "ro") in err


def test_full_disk_says_nothing_was_lost(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import nasforge.core.atomic

    writer = nasforge.core.atomic.atomic_write_bytes

    def full(path: Any, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    config = write_config(tmp_path, {**TINY, "train": None})
    run = tmp_path / "run"
    monkeypatch.setattr(nasforge.core.atomic, "atomic_write_bytes", full)  # the checkpoint cannot be written
    err = fails_cleanly(capsys, "search", str(config), "--run-dir", str(run), "--quiet")
    assert "no space left" in err and "Nothing was lost" in err and "checkpoint.pt" in err
    store = TrialStore(run / STORE_FILE)
    try:
        assert len(store) == 2  # the trials are intact
    finally:
        store.close()
    monkeypatch.setattr(nasforge.core.atomic, "atomic_write_bytes", writer)
    assert main(["search", "--resume", str(run), "--quiet"]) == 0


# -- point 7: conflicting options -------------------------------------------------------------------


def test_conflicting_options(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    err = fails_cleanly(capsys, "search", "--resume", str(run_dir), "--run-dir", str(tmp_path / "other"))
    assert str(run_dir) in err and str(tmp_path / "other") in err
    err = fails_cleanly(capsys, "search", str(config), "--resume", str(run_dir))
    assert str(run_dir) in err and str(config) in err
    err = fails_cleanly(capsys, "train", "--run", str(run_dir), "--config", str(config), "--quiet")
    assert str(run_dir) in err and str(config) in err
    assert not (tmp_path / "other").exists()


# -- point 8: out-of-range numbers and missing arch files -------------------------------------------


@pytest.mark.parametrize("n", ["0", "-2", "two"])
def test_derive_n_must_be_positive(run_dir: Path, capsys: pytest.CaptureFixture[str], n: str) -> None:
    err = fails_cleanly(capsys, "derive", str(run_dir), "-n", n)
    assert "-n" in err and "≥ 1" in err and n in err


def test_train_epochs_zero_names_the_option(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails_cleanly(capsys, "train", "--run", str(run_dir), "--epochs", "0", "--quiet")
    assert "--epochs" in err and "≥ 1" in err and "validation error" not in err


@pytest.mark.parametrize("arch", ["missing.yaml", "runs/nowhere/top5.yml", "runs/nowhere"])
def test_missing_arch_file(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arch: str) -> None:
    err = fails_cleanly(capsys, "train", "--run", str(run_dir), "--arch", arch, "--out", str(tmp_path / "m"), "--quiet")
    assert arch in err and "does not exist" in err


# -- point 15: inactive nested choices --------------------------------------------------------------


def nested_space() -> SearchSpace:
    """``outer`` picks a block holding choice ``inner`` or an identity; ``depth`` 1 leaves out the
    second block and its choice ``late``."""
    import nasforge.nn as nm

    inner = nm.LayerChoice([nn.ReLU(), nn.Tanh()], label="inner")
    outer = nm.LayerChoice([nn.Sequential(inner), nn.Identity()], label="outer")
    blocks = [nn.Identity(), nm.LayerChoice([nn.ReLU(), nn.Sigmoid()], label="late")]
    return nm.ModelSpace(nn.Sequential(outer, nm.Repeat(blocks, depth=(1, 2), label="depth")))


def test_effective_arch_of_nested_choices() -> None:
    space = nested_space()
    a = Arch({"inner": 0, "outer": 1, "depth": 1, "late": 0})
    assert space.effective(a) == space.effective(a.with_value("inner", 1).with_value("late", 1))
    b = Arch({"inner": 1, "outer": 0, "depth": 2, "late": 1})
    assert space.effective(b) == b  # everything active
    assert space.effective(b.with_value("inner", 0)) != space.effective(b)


def test_mutation_changes_the_effective_arch() -> None:
    space = nested_space()
    a = Arch({"inner": 0, "outer": 1, "depth": 1, "late": 0})  # only outer and depth matter
    rng = np.random.default_rng(0)
    for _ in range(50):
        child = space.mutate(a, rng)
        assert space.effective(child) != space.effective(a)
    assert all(space.effective(n) != space.effective(a) for n in space.neighbours(a))


def test_search_deduplicates_on_the_effective_arch() -> None:
    space = nested_space()

    class Count(Estimator):
        reports = frozenset({"val_acc"})

        def estimate(self, arch: Arch, ctx: Context) -> Result:
            return Result(metrics={"val_acc": 1.0})

    result = run_search(space, RandomSearch(), Count(), SingleMetric("val_acc"), budget=16, seed=0)
    effective = [space.effective(t.arch) for t in result.trials]
    # 16 raw archs, 9 networks: (outer=0: inner 2) x (depth=1: 1, depth=2: late 2) + (outer=1) x 3
    assert len(effective) == len(set(effective)) == 9
    assert result.stopped_because == "the strategy has nothing left to ask"


# -- point 19: any config file or arch string validates or exits 2 ---------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SECTIONS = ["data", "space", "strategy", "estimator", "objective"]
TYPES = ["digits", "custom", "mnist", "nb201", "darts", "hpo", "evolution", "random", "scratch", "command", "single", "pareto", "nope"]
KEYS = ["type", "C", "N", "epochs", "metric", "mode", "constraints", "population_size", "factory", "trials", "seconds", "inner", "weights", "lr", "x"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(TYPES)
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3), max_leaves=6)
section = st.one_of(st.sampled_from(TYPES), st.fixed_dictionaries({"type": st.sampled_from(TYPES)}, optional={k: values for k in KEYS[1:]}), values)
config_dicts = st.fixed_dictionaries(
    {},
    optional={
        **{name: section for name in SECTIONS},
        "budget": st.one_of(values, st.fixed_dictionaries({}, optional={"trials": values, "seconds": values})),
        "name": values,
        "seed": values,
        "device": st.one_of(st.sampled_from(["cpu", "cuda", "auto", "tpu"]), values),
        "threads": values,
        "top_k": values,
        "checkpoint_seconds": values,
        "train": st.one_of(values, st.dictionaries(st.sampled_from(["epochs", "lr", "batch_size", "criterion", "x"]), values, max_size=3)),
        "run_dir": values,
        "extra": values,
    },
)
config_texts = st.one_of(
    config_dicts.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.text(max_size=80),
    st.lists(st.sampled_from(["space:", " nb201", "{", "}", "[", "type: ", "\n", "  ", "- ", ":", "'", "budget: {trials: 2}", "\t"]), max_size=12).map("".join),
)


class _Validated(Exception):
    """Raised instead of building the experiment: the config passed validation."""


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=config_texts)
def test_any_config_validates_or_exits_2(text: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    import nasforge.runner.experiment as experiment

    def validated(config: Any, source: str = "", **_: Any) -> Any:
        raise _Validated

    monkeypatch.setattr(experiment, "build_experiment", validated)  # the cheap path: parse and validate only
    folder = tmp_path_factory.mktemp("cfg")
    path = folder / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        status = main(["search", str(path), "--run-dir", str(folder / "run"), "--quiet"])
    except _Validated:
        return
    assert status == 2


def _spaces() -> dict[str, SearchSpace]:
    return {
        "nb201": create("space", "nb201", {"C": 4, "N": 1}),
        "darts": create("space", "darts", {}),
        "hpo": create("space", "with_hparams", {"inner": {"type": "nb201", "C": 4, "N": 1}, "hparams": {"lr": [0.01, 0.1]}}),
        "nested": nested_space(),
    }


NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "conv"]
arch_texts = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.sampled_from(["|", "+", "~", "0", "1", "2", "3", "|+|", "{", "}", '"', ":", ",", " ", "/", ".yaml", "[", "]"]), st.sampled_from(NB201_OPS)), max_size=20).map("".join),
    st.dictionaries(st.text(max_size=8) | st.sampled_from(["inner", "outer", "depth", "late", "arch", "hp.lr"]), scalars, max_size=5).map(
        lambda d: yaml.safe_dump(d, default_flow_style=True).strip()
    ),
)


@pytest.fixture(scope="module")
def spaces() -> dict[str, SearchSpace]:
    return _spaces()


arch_files = st.one_of(
    st.text(max_size=60),
    st.fixed_dictionaries({"archs": values}).map(yaml.safe_dump),
    st.fixed_dictionaries({"archs": st.lists(st.fixed_dictionaries({}, optional={"arch": arch_texts, "rank": values}), max_size=2)}).map(
        yaml.safe_dump
    ),
    arch_texts,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["nb201", "darts", "hpo", "nested"]), text=arch_texts, in_file=st.none() | arch_files)
def test_any_arch_string_parses_or_exits_2(
    name: str,
    text: str,
    in_file: str | None,
    spaces: dict[str, SearchSpace],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``eval-arch CONFIG ARCH`` through the CLI's own arch reading (``arch_from_text``), stopped
    before anything is estimated; ``in_file``: the arch as a YAML file's content (as derive writes)."""
    import types

    import nasforge.runner.experiment as experiment

    space = spaces[name]

    class _Parsed(Exception):
        pass

    def stub(config: Any, source: str = "", **_: Any) -> Any:
        def runner(**__: Any) -> Any:
            raise _Parsed

        return types.SimpleNamespace(space=space, runner=runner, estimator=None)

    monkeypatch.setattr(experiment, "build_experiment", stub)
    folder = tmp_path_factory.mktemp("arch")
    config = write_config(folder)
    if in_file is not None:
        text = str(folder / "arch.yaml")
        (folder / "arch.yaml").write_text(in_file, encoding="utf-8")
    if text.startswith("-"):
        text = " " + text  # not an option
    try:
        status = main(["eval-arch", str(config), text])
    except _Parsed:
        return
    assert status == 2


def test_dnas_nesterov_without_momentum_is_a_clear_error() -> None:
    """The dnas weights' SGD is checked as every trainer's: Nesterov needs momentum (not a torch
    ValueError at the first epoch)."""
    from nasforge.core import registry
    from nasforge.core.errors import ConfigError
    from nasforge.spaces.nb201 import NB201Space

    estimator = registry.create("estimator", "dnas", {"momentum": 0.0, "nesterov": True}, context={"space": NB201Space(C=4, N=1)})
    strategy = registry.create("strategy", "darts", {})
    with pytest.raises(ConfigError, match="nesterov.*momentum|momentum.*nesterov"):
        estimator._sgd(strategy)


@pytest.mark.parametrize(
    "args",
    [
        ["search", "CONFIG", "--set", "space.C=[1"],
        ["profile", "--space", "nb201", "--input-size", "1,8,8", "--space-options", "[1", "-o", "OUT"],
        ["costmodel", "fit", "--space", "nb201", "--table", "OUT", "--space-options", "{C: [", "-o", "OUT"],
    ],
)
def test_malformed_yaml_in_an_option_names_it(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("space: {type: nb201, C: 4, N: 1}\nstrategy: random\nestimator: scratch\n")
    args = [str(config) if a == "CONFIG" else str(tmp_path / "out.json") if a == "OUT" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not valid YAML" in err
