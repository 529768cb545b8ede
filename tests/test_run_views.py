"""Seeing a run (#16): `nasforge status`, `nasforge report` and TensorBoard event files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from nasforge.cli import main
from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.trial import Trial, TrialStatus
from nasforge.runner.rundir import RunLock
from nasforge.runner.store import TrialStore
from nasforge.runner.summary import summarize

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
EDGES = ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]


def make_run(
    run_dir: Path, *, multi: bool = False, n: int = 8, failed: tuple[int, ...] = (3,), stopped: bool = True
) -> Path:
    """A run directory as a search leaves it: config.yaml and a store of ``n`` trials."""
    objective = (
        {"type": "pareto", "metrics": {"val_acc": "max", "params": "min"}}
        if multi
        else {"type": "single", "metric": "val_acc"}
    )
    config = {
        "name": "demo",
        "space": {"type": "nb201", "C": 4, "N": 1},
        "strategy": {"type": "evolution"},
        "estimator": {"type": "scratch"},
        "objective": objective,
        "budget": {"trials": 10},
    }
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    score = registry.create(
        "objective", objective["type"], {k: v for k, v in objective.items() if k != "type"}, where="test"
    )
    store = TrialStore(run_dir / "trials.sqlite")
    for i in range(n):
        arch = Arch({e: OPS[(i + k) % len(OPS)] for k, e in enumerate(EDGES)})
        trial = Trial(number=i, arch=arch, seed=i)
        if i in failed:
            trial.status = TrialStatus.FAILED
            trial.error = f'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: boom {i}'
        else:
            trial.metrics = {"val_acc": float(50 + (i * 7) % 30), "params": float(1000 + 100 * i)}
            trial.values = tuple(score.score(trial.metrics))
        trial.extras = {"elapsed": 1.5 * (i + 1), "train_loss": [1.0, 0.5, 0.25]}
        store.add(trial)
    if stopped:
        store.set_meta(
            "stopped", {"reason": f"trial budget of {n} reached", "trials": n, "budget": {"trials": n, "seconds": None}}
        )
    store.close()
    return run_dir


# -- status -----------------------------------------------------------------------------------


def test_summary_of_a_finished_run(tmp_path: Path) -> None:
    s = summarize(make_run(tmp_path / "run"))
    assert (s.state, s.trials, s.completed, s.failed) == ("finished", 8, 7, 1)
    assert s.stop_reason == "trial budget of 8 reached"
    assert [r.number for r in s.best] == [4, 7, 2, 6, 1]  # val_acc 78, 69, 64, 62, 57
    assert s.best[0].arch.startswith("|")  # the space's own notation
    assert s.last_error == "RuntimeError: boom 3" and s.last_error_trial == 3
    assert s.budget_used() == {"trials": [8, 10], "seconds": [12.0, None]}
    assert [r.best_so_far for r in s.rows][:3] == [50.0, 57.0, 64.0]


def test_status_states_running_killed_stopped(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", stopped=False)
    assert summarize(run).state == "stopped"
    with RunLock(run):
        s = summarize(run)
        assert (s.state, s.pid) == ("running", os.getpid())
    assert summarize(run).state == "stopped"  # a clean end empties the lock file
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout
    (run / "run.lock").write_text(dead)  # a writer killed with SIGKILL leaves its PID, and no lock
    s = summarize(run)
    assert (s.state, s.pid) == ("killed", int(dead))


def test_status_command_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run")
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "8 done (7 completed, 1 failed)" in out and "8 / 10 trials" in out
    assert "RuntimeError: boom 3" in out
    assert main(["status", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "finished" and data["trials"] == 8 and data["failed"] == 1
    assert [b["number"] for b in data["best"]] == [4, 7, 2, 6, 1] and data["best"][0]["values"] == {"val_acc": 78.0}


def test_status_of_a_read_only_run_and_of_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run")
    os.chmod(run, 0o555)
    try:
        assert main(["status", str(run), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["trials"] == 8
    finally:
        os.chmod(run, 0o755)
    assert main(["status", str(tmp_path)]) == 2
    assert "holds no trials" in capsys.readouterr().err


def test_status_of_a_multi_objective_run_shows_the_pareto_front(tmp_path: Path) -> None:
    s = summarize(make_run(tmp_path / "run", multi=True))
    assert s.multi_objective and s.pareto
    front = {r.number for r in s.rows if r.number in s.pareto}
    assert 0 in front and 4 in front  # the fewest params, and the best accuracy


# -- report -----------------------------------------------------------------------------------


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.rows = 0
        self.points = 0
        self.front = 0
        self.urls: list[str] = []
        self.in_trials = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "table" and "trials" in classes:
            self.in_trials = True
        if tag == "tr" and self.in_trials and "data-trial" in a:
            self.rows += 1
        if tag == "circle" and "pt" in classes:
            self.points += 1
            self.front += "front" in classes
        for key in ("src", "href", "xlink:href", "action"):
            if a.get(key):
                self.urls.append(str(a[key]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_trials = False


def test_report_is_one_self_contained_html_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run")
    out = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    html = out.read_text()
    parsed = _Collect()
    parsed.feed(html)
    parsed.close()
    assert parsed.rows == 8  # every trial
    assert parsed.points == 7  # one per completed trial (a single objective: no Pareto chart)
    assert "http://" not in html and "https://" not in html and not parsed.urls
    assert "RuntimeError: boom 3" in html and "<script>" in html and "sortable" in html
    assert "node 1 &lt;- 0" in html  # the best arch's cell drawn as text

    assert main(["report", str(run), "-o", str(out)]) == 2  # never overwritten without --force
    assert "already exists" in capsys.readouterr().err
    assert main(["report", str(run), "-o", str(out), "--force"]) == 0


def test_report_of_a_multi_objective_run_draws_its_pareto_front(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", multi=True)
    out = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    parsed = _Collect()
    parsed.feed(out.read_text())
    s = summarize(run)
    assert parsed.points == 2 * 7 and parsed.front == len(s.pareto)


# -- TensorBoard ------------------------------------------------------------------------------


def _events(folder: Path):  # noqa: ANN202
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(folder), size_guidance={accumulator.SCALARS: 0, accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def test_tensorboard_observer_writes_trials_best_so_far_hparams_and_curves(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from nasforge.runner.tensorboard import TensorBoardObserver

    run = make_run(tmp_path / "run")
    trials = TrialStore(run / "trials.sqlite", readonly=True).trials()
    observer = TensorBoardObserver(run, ["val_acc"])
    for trial in trials:
        observer(trial)
    observer.close()
    acc = _events(run / "tb")
    values = [e.value for e in acc.Scalars("objective/val_acc")]
    assert [e.step for e in acc.Scalars("objective/val_acc")] == [t.number for t in trials if t.values]
    assert values[:3] == [50.0, 57.0, 64.0]
    assert [e.value for e in acc.Scalars("best/val_acc")][-1] == 78.0
    assert [e.value for e in acc.Scalars("trial/failed")] == [float(t.number == 3) for t in trials]
    session = _events(run / "tb" / "trials" / "trial-0004")
    plugins = session.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins and "_hparams_/experiment" in plugins
    assert [e.value for e in session.Scalars("epoch/train_loss")] == [1.0, 0.5, 0.25]


def test_tensorboard_alphas_of_a_differentiable_strategy(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from nasforge.runner.tensorboard import TensorBoardObserver

    class Alphas:
        epoch = 0

        def snapshot(self) -> dict:
            return {
                "epoch": self.epoch,
                "candidates": {"1<-0": ["a", "b"]},
                "probs": {"1<-0": [0.3 + 0.1 * self.epoch, 0.7 - 0.1 * self.epoch]},
            }

    alphas = Alphas()
    observer = TensorBoardObserver(tmp_path, ["val_acc"], alphas)
    for epoch in range(3):
        alphas.epoch = epoch
        observer(Trial(number=epoch, arch=Arch({"1<-0": "a"}), seed=0, metrics={"val_acc": 1.0}, values=(1.0,)))
    observer.close()
    acc = _events(tmp_path / "tb")
    assert [round(e.value, 4) for e in acc.Scalars("alphas/1<-0/a")] == [0.3, 0.4, 0.5]
    assert "alphas/1<-0" in acc.Tags()["histograms"]


def test_search_with_tensorboard_true_writes_event_files(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    config = {
        "name": "tb",
        "seed": 1,
        "threads": 1,
        "data": {"type": "digits", "train_limit": 200, "test_limit": 50},
        "space": {"type": "nb201", "C": 4, "N": 1},
        "strategy": {"type": "random"},
        "estimator": {"type": "scratch", "epochs": 2, "batch_size": 64},
        "budget": {"trials": 2},
        "tensorboard": True,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["search", str(path), "--run-dir", str(run), "--quiet"]) == 0
    acc = _events(run / "tb")
    assert [e.step for e in acc.Scalars("objective/val_acc")] == [0, 1]
    assert len(_events(run / "tb" / "trials" / "trial-0001").Scalars("epoch/train_loss")) == 2


def _tb_search(tmp_path: Path, strategy: dict, estimator: dict, trials: int) -> Path:
    config = {
        "name": "tb-epochs",
        "seed": 1,
        "threads": 1,
        "data": {"type": "digits", "train_limit": 128, "test_limit": 32},
        "space": {"type": "nb201", "C": 4, "N": 1},
        "strategy": strategy,
        "estimator": estimator,
        "budget": {"trials": trials},
        "tensorboard": True,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["search", str(path), "--run-dir", str(run), "--quiet"]) == 0
    return run


def test_tensorboard_per_epoch_curves_of_a_supernet_search(tmp_path: Path) -> None:
    """The supernet's epochs (trained before the first trial) as epoch/supernet/train_loss, step = epoch."""
    pytest.importorskip("tensorboard")
    estimator = {"type": "supernet", "rule": "spos", "epochs": 3, "batch_size": 32, "bn_batches": 1}
    run = _tb_search(tmp_path, {"type": "random"}, estimator, trials=2)
    acc = _events(run / "tb")
    curve = acc.Scalars("epoch/supernet/train_loss")
    assert [e.step for e in curve] == [1, 2, 3]
    assert all(e.value > 0 for e in curve)
    assert [e.step for e in acc.Scalars("objective/val_acc")] == [0, 1]


def test_tensorboard_per_epoch_curves_of_a_dnas_search(tmp_path: Path) -> None:
    """DARTS epochs (one per trial) as epoch/dnas/train_loss, val_acc and val_loss, step = search epoch."""
    pytest.importorskip("tensorboard")
    run = _tb_search(tmp_path, {"type": "darts", "epochs": 2}, {"type": "dnas", "batch_size": 32}, trials=2)
    acc = _events(run / "tb")
    for name in ("train_loss", "val_acc", "val_loss"):
        assert [e.step for e in acc.Scalars(f"epoch/dnas/{name}")] == [1, 2], name


def test_tensorboard_missing_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "space": {"type": "nb201"},
                "strategy": {"type": "random"},
                "estimator": {"type": "scratch"},
                "budget": {"trials": 1},
            }
        )
    )
    assert main(["search", str(path), "--run-dir", str(tmp_path / "run"), "--tensorboard"]) == 2
    assert "nasforge[tensorboard]" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
