"""Pipelines: steps in order with references, resumable as a whole, and clear config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from nasforge.cli import main
from nasforge.core.errors import CheckpointError, ConfigError
from nasforge.core.threads import pinned_threads
from nasforge.core.trial import Trial
from nasforge.runner.loop import SearchResult
from nasforge.runner.pipeline import DONE_FILE, PipelineConfig, load_pipeline, load_run, plan, run_pipeline

REPO = Path(__file__).resolve().parents[1]

#: search -> tune -> train on a few hundred digits; a few seconds in all.
TINY: dict[str, Any] = {
    "name": "tiny",
    "defaults": {
        "seed": 0,
        "threads": 1,
        "data": {"type": "digits", "train_limit": 300},
        "space": {"type": "nb201", "C": 4, "N": 1},
    },
    "steps": {
        "search": {"kind": "search", "strategy": "random", "estimator": {"type": "scratch", "epochs": 1}, "budget": {"trials": 2}},
        "tune": {
            "kind": "tune",
            "arch": "${search.best}",
            "hparams": {"lr": [0.01, 0.1], "batch_size": [32, 64]},
            "strategy": "grid",
            "estimator": {"type": "scratch", "epochs": 1},
            "budget": {"trials": 3},
        },
        "train": {"kind": "train", "arch": "${search.best}", "hparams": "${tune.hparams}", "train": {"epochs": 1}},
    },
}


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_three_steps_run_in_order_with_references(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pinned_threads(2):  # the steps run with threads: 1, then give the process its own back
        assert main(["pipeline", str(write(tmp_path, TINY)), "--run-dir", str(run_dir)]) == 0
        assert torch.get_num_threads() == 2
    done = {step: json.loads((run_dir / step / DONE_FILE).read_text()) for step in ("search", "tune", "train")}
    search, tune, train = (done[s]["outputs"] for s in ("search", "tune", "train"))
    assert search["best"].startswith("|") and Path(search["topk"]).is_file()
    tuned_space = yaml.safe_load((run_dir / "tune" / "config.yaml").read_text())["space"]
    assert tuned_space["type"] == "with_hparams" and tuned_space["arch"] == search["best"]
    assert set(tune["hparams"]) == {"lr", "batch_size"}
    model = yaml.safe_load((Path(train["dir"]) / "model.yaml").read_text())
    assert model["arch"] == search["best"] and model["train"]["lr"] == tune["hparams"]["lr"]
    assert model["train"]["batch_size"] == tune["hparams"]["batch_size"] and 0 <= train["test_acc"] <= 100
    # a finished pipeline resumes to nothing; a second fresh run into the same folder is refused
    assert main(["pipeline", "--resume", str(run_dir)]) == 0
    with pytest.raises(CheckpointError, match="already holds a pipeline"):
        run_pipeline(load_run(run_dir), run_dir)


def test_interrupted_step_resumes_without_rerunning_finished_ones(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    calls: list[tuple[str, int]] = []

    def killed_in_tune(step: str, trial: Trial, result: SearchResult) -> None:
        calls.append((step, trial.number))
        if step == "tune" and trial.number == 1:
            raise KeyboardInterrupt  # as if killed after the tune step's second trial

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(PipelineConfig.model_validate(TINY), run_dir, on_trial=killed_in_tune)
    assert calls == [("search", 0), ("search", 1), ("tune", 0), ("tune", 1)]
    assert (run_dir / "search" / DONE_FILE).is_file() and not (run_dir / "tune" / DONE_FILE).exists()

    calls.clear()
    outputs = run_pipeline(load_run(run_dir), run_dir, resume=True, on_trial=lambda s, t, r: calls.append((s, t.number)))
    assert calls == [("tune", 2)]  # search skipped; tune's two stored trials replayed, not re-run
    assert (run_dir / "train" / DONE_FILE).is_file() and outputs["train"]["test_acc"] >= 0


def config_with(steps: dict[str, Any], **top: Any) -> PipelineConfig:
    return PipelineConfig.model_validate({"steps": steps, **top})


SEARCH = {"kind": "search", "space": "nb201", "strategy": "random", "estimator": "nb201_table", "budget": {"trials": 1}}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ({"a": {**SEARCH, "after": "a"}}, "depends on itself"),
        ({"a": {"kind": "train", "space": "nb201", "arch": "${serch.best}"}, "search": SEARCH}, "unknown step 'serch'. Did you mean 'search'?"),
        ({"a": {"kind": "trian", "arch": "x"}}, "unknown kind 'trian'. Did you mean 'train'? Step kinds: search, train, tune"),
        ({"a": {"arch": "x"}}, "has no `kind`"),
        ({"a": SEARCH, "b": {"kind": "train", "space": "nb201", "arch": "${a.bset}"}}, "outputs only: best, value"),
        ({"a": {**SEARCH, "budgett": 3}}, "unknown option 'budgett'. Did you mean 'budget'?"),
        ({"a": {"kind": "train", "space": "nb201", "arch": "${a}"}}, "must name a step and one of its outputs"),
    ],
)
def test_bad_pipelines_are_config_errors(steps: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        plan(config_with(steps))


def test_cycles_are_found_and_shown() -> None:
    steps = {
        "a": {**SEARCH, "after": ["c"]},
        "b": {"kind": "train", "space": "nb201", "arch": "${a.best}"},
        "c": {"kind": "search", "space": "nb201", "strategy": "random", "estimator": "nb201_table",
              "budget": {"trials": "${b.test_acc}"}},
        "d": SEARCH,
    }
    with pytest.raises(ConfigError, match=r"cycle \(each needs the next\): a -> c -> b -> a"):
        plan(config_with(steps))
    del steps["a"]["after"]
    assert plan(config_with(steps)) == ["a", "b", "c", "d"]


def test_unknown_defaults_and_bad_step_options_are_caught_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="defaults has unknown key 'sead'. Did you mean 'seed'"):
        plan(config_with({"a": SEARCH}, defaults={"sead": 1}))
    bad = {**SEARCH, "strategy": {"type": "evolution", "population_sise": 3}}
    with pytest.raises(ConfigError, match="population_sise"):
        load_pipeline(write(tmp_path, {"steps": {"a": bad}}))
    with pytest.raises(ConfigError, match=r"step 'a' \(train\): train.epochs = 0"):
        load_pipeline(write(tmp_path, {"steps": {"a": {"kind": "train", "space": "nb201", "arch": "x", "train": {"epochs": 0}}}}))
    with pytest.raises(ConfigError, match="unknown key 'CC'"):
        load_pipeline(write(tmp_path, {"steps": {"a": {"kind": "train", "space": {"type": "nb201", "CC": 3}, "arch": "x"}}}))
    with pytest.raises(CheckpointError, match="no pipeline.yaml"):
        load_run(tmp_path / "nowhere")


def test_demo_pipeline_config_is_valid() -> None:
    config = load_pipeline(REPO / "configs" / "pipeline_demo.yaml")
    assert plan(config) == ["search", "tune", "train"]


def test_train_step_on_a_latency_bounded_space_reports_predicted_and_measured_latency(tmp_path: Path) -> None:
    from nasforge.hardware.profile import profile_space
    from nasforge.spaces.nb201 import NB201Space

    table = tmp_path / "table.json"
    profile_space(NB201Space(C=4, N=1, in_channels=1), (1, 1, 8, 8), warmup=1, repeats=3, calibrate=1).save(table)
    space = {"type": "latency_bounded", "inner": {"type": "nb201", "C": 4, "N": 1}, "table": str(table), "max_ms": 1e3}
    arch = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    steps = {"train": {"kind": "train", "space": space, "arch": arch, "train": {"epochs": 1}}}
    config = {"name": "latency", "defaults": {"threads": 1, "data": {"type": "digits", "train_limit": 200}}, "steps": steps}
    with pinned_threads(2):
        outputs = run_pipeline(load_pipeline(write(tmp_path, config)), tmp_path / "run")
        assert torch.get_num_threads() == 2  # the train step's threads: 1 ended with it
    metrics = outputs["train"]["metrics"]
    assert metrics["latency_predicted_ms"] > 0 and metrics["latency_measured_ms"] > 0
