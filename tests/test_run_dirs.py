"""Run directories (#15): one writer at a time, resume only by the run's own config, finished
models never overwritten, read-only runs readable, leftovers cleaned, the real run dir on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nasforge.cli import main
from nasforge.core import registry

PLUGIN = '''
import hashlib, time
from nasforge.core.registry import register
from nasforge.core.estimator import Estimator
from nasforge.core.trial import Result

@register("estimator", "{name}")
class Hashed(Estimator):
    """Deterministic pseudo-metrics from the arch and seed, after a short sleep."""
    def __init__(self, sleep: float = 0.0) -> None:
        self.sleep = sleep
    def estimate(self, arch, ctx):
        time.sleep(self.sleep)
        digest = hashlib.sha256(f"{{arch}}{{ctx.seed}}".encode()).digest()
        return Result(metrics={{"val_acc": digest[0] / 2.55}})
'''

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def estimator(request: pytest.FixtureRequest) -> str:
    """A fast plugin estimator (no training), registered in this process and visible to
    subprocesses through NASFORGE_HOME; its name is unique to the test."""
    name = "rundirs_" + re.sub(r"\W", "_", request.node.name)[:40]
    folder = Path(os.environ["NASFORGE_HOME"]) / "plugins"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(PLUGIN.format(name=name))
    registry.load_plugins()
    return name


def config_file(tmp_path: Path, estimator: str, *, trials: int = 3, sleep: float = 0.0, train: bool = False) -> Path:
    config = {
        "name": "rundirs",
        "seed": 3,
        "threads": 1,
        "data": {"type": "digits", "train_limit": 200, "test_limit": 50},
        "space": {"type": "nb201", "C": 4, "N": 1},
        "strategy": {"type": "evolution", "population_size": 3, "sample_size": 2},
        "estimator": {"type": estimator, "sleep": sleep},
        "budget": {"trials": trials},
        "checkpoint_seconds": 0.05,
        **({"train": {"epochs": 1, "batch_size": 64}} if train else {}),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nasforge.cli", *args]


def stored(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(run_dir / "trials.sqlite") as db:
        return db.execute("SELECT number, arch, seed FROM trials ORDER BY number").fetchall()


def errors(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return " ".join((captured.out + captured.err).split())


# -- 1. one writer per run directory ------------------------------------------------------------


def test_two_searches_started_at_once_one_runs_the_other_exits_2_naming_its_pid(tmp_path: Path, estimator: str) -> None:
    config = config_file(tmp_path, estimator, trials=25, sleep=0.12)
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    command = cli("search", str(config), "--run-dir", str(run_dir), "--quiet")
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    codes = [p.returncode for p in processes]
    assert sorted(codes) == [0, 2], outputs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    err = " ".join(outputs[loser][1].split())
    assert f"PID {processes[winner].pid}" in err and "in use by another nasforge process" in err
    assert all("Traceback" not in out + err for out, err in outputs)
    trials = stored(run_dir)
    assert [t[0] for t in trials] == list(range(25))  # one run's trials, none twice
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == 3


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run's lock as a writer does (flock, its PID in the file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    script = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(run_dir / 'run.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_every_writer_of_a_locked_run_exits_2_naming_the_holder(
    tmp_path: Path, estimator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nasforge.runner.rundir import RunLockedError

    config = config_file(tmp_path, estimator, train=True)
    run_dir = tmp_path / "run"
    assert main(["search", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    before = stored(run_dir)
    capsys.readouterr()
    holder = _hold_lock(run_dir)
    try:
        message = f"PID {holder.pid}"
        assert main(["search", "--resume", str(run_dir), "--quiet", "--set", "budget.trials=6"]) == 2
        assert message in errors(capsys)
        assert main(["train", "--run", str(run_dir), "--arch", ARCH, "--quiet"]) == 2
        assert message in errors(capsys)
        assert main(["search", str(config), "--run-dir", str(tmp_path / "run2"), "--quiet"]) == 0  # other runs go on
        from nasforge.runner.config import load_config
        from nasforge.runner.experiment import build_experiment

        runner = build_experiment(load_config(config)).runner(run_dir)
        with pytest.raises(RunLockedError, match=message):
            runner.run(resume=True)
        runner.store.close()
    finally:
        holder.kill()
        holder.wait()
    assert stored(run_dir) == before and not (run_dir / "final-2").exists()


def test_a_killed_writers_stale_lock_is_taken_over(tmp_path: Path, estimator: str, caplog: pytest.LogCaptureFixture) -> None:
    config = config_file(tmp_path, estimator, trials=40, sleep=0.05)
    run_dir = tmp_path / "run"
    process = subprocess.Popen(cli("search", str(config), "--run-dir", str(run_dir), "--quiet"), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if len(stored(run_dir)) >= 3:
                break
        except sqlite3.Error:  # not created yet
            pass
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run_dir / "run.lock").read_text().strip() == str(process.pid)  # stale: its holder is dead
    with caplog.at_level("WARNING", logger="nasforge"):
        assert main(["search", "--resume", str(run_dir), "--quiet"]) == 0
    assert f"took over the stale lock of {run_dir} from PID {process.pid} (no longer running" in caplog.text
    assert len(stored(run_dir)) == 40
    assert (run_dir / "run.lock").read_text() == ""  # a clean end leaves no PID behind


def test_resume_checks_the_seed_and_config_against_store_and_checkpoint(
    tmp_path: Path, estimator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, estimator)
    run_dir, other = tmp_path / "run", tmp_path / "other"
    assert main(["search", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    assert main(["search", str(config), "--run-dir", str(other), "--quiet", "--set", "seed=4"]) == 0
    saved = (run_dir / "config.yaml").read_text()
    capsys.readouterr()
    # a changed section of the config is refused before config.yaml is rewritten
    assert main(["search", "--resume", str(run_dir), "--quiet", "--set", "estimator.sleep=0.001"]) == 2
    assert "the estimator section(s) of the config differ" in errors(capsys)
    assert (run_dir / "config.yaml").read_text() == saved
    # a checkpoint of another run (another seed) is refused, the store is untouched
    before = stored(run_dir)
    (run_dir / "checkpoint.pt").write_bytes((other / "checkpoint.pt").read_bytes())
    assert main(["search", "--resume", str(run_dir), "--quiet", "--set", "budget.trials=5"]) == 2
    assert "checkpoint.pt was written with seed 4, not 3" in errors(capsys)
    assert stored(run_dir) == before
    # the budget may change: the run's own config resumes
    (run_dir / "checkpoint.pt").unlink()
    assert main(["search", "--resume", str(run_dir), "--quiet", "--set", "budget.trials=5"]) == 0
    assert len(stored(run_dir)) == 5 and {seed for _, _, seed in stored(run_dir)} == {s for _, _, s in before} | {
        s for _, _, s in stored(run_dir)[3:]
    }


# -- 2. finished models are never overwritten ---------------------------------------------------


def test_train_never_overwrites_a_model_folder(tmp_path: Path, estimator: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert main(["search", str(config_file(tmp_path, estimator, train=True)), "--run-dir", str(run_dir), "--quiet"]) == 0
    final = run_dir / "final"
    weights, described = (final / "weights.pt").read_bytes(), (final / "model.yaml").read_text()
    capsys.readouterr()
    # the default folder is taken: the next free name, and the command says where
    assert main(["train", "--run", str(run_dir), "--arch", ARCH, "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"this one goes to {run_dir / 'final-2'}" in out
    assert yaml.safe_load((run_dir / "final-2" / "model.yaml").read_text())["arch"] == ARCH
    assert (final / "weights.pt").read_bytes() == weights and (final / "model.yaml").read_text() == described
    # an explicit --out that exists is an error before any training, unless --force
    assert main(["train", "--run", str(run_dir), "--arch", ARCH, "--out", str(final), "--quiet"]) == 2
    text = errors(capsys)
    assert "already exists; a trained model is never replaced" in text and "--force" in text and "training" not in text
    assert (final / "weights.pt").read_bytes() == weights
    assert main(["train", "--run", str(run_dir), "--arch", ARCH, "--out", str(final), "--force", "--quiet"]) == 0
    assert yaml.safe_load((final / "model.yaml").read_text())["arch"] == ARCH
    assert not list(run_dir.glob(".*.tmp"))


def test_a_model_folder_is_written_whole(tmp_path: Path, estimator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure (or kill) between the files of a model folder leaves no folder, never weights
    without their model.yaml."""
    import nasforge.core.atomic as atomic

    config = config_file(tmp_path, estimator, train=True)
    real_fsync, calls = os.fsync, []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # after weights.pt, before the rest
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    model = tmp_path / "model"
    with pytest.raises(OSError, match="Input/output"):
        main(["train", "--config", str(config), "--arch", ARCH, "--out", str(model), "--quiet"])
    assert not model.exists() and not list(tmp_path.glob(".*.tmp"))


def test_resuming_a_finished_run_says_so_and_does_not_retrain(
    tmp_path: Path, estimator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main(["search", str(config_file(tmp_path, estimator, train=True)), "--run-dir", str(run_dir), "--quiet"]) == 0
    weights = (run_dir / "final" / "weights.pt").read_bytes()
    capsys.readouterr()
    assert main(["search", "--resume", str(run_dir), "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"run {run_dir} is finished" in out and "Nothing to do" in out and "test accuracy" not in out
    assert (run_dir / "final" / "weights.pt").read_bytes() == weights
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("final")) == ["final"]


def test_a_pipeline_train_step_trained_before_a_kill_is_not_trained_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nasforge.runner.pipeline as pipeline

    model = tmp_path / "step" / "model"
    model.mkdir(parents=True)
    (model / "model.yaml").write_text("arch: x\n")
    (model / "metrics.json").write_text('{"test_acc": 42.0}')
    monkeypatch.setattr(pipeline, "train_arch", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(pipeline.registry, "create", lambda *a, **k: _FakeData())
    monkeypatch.setattr(pipeline, "arch_from_text", lambda space, text: None)
    fake = type("Step", (), {"threads": None, "data": _Spec(), "space": _Spec(), "seed": 0, "arch": "x"})()
    outputs = pipeline._run_train("train", fake, tmp_path / "step", None)
    assert outputs["test_acc"] == 42.0 and outputs["dir"] == str(model)


class _Spec:
    type = "x"
    options: dict = {}


class _FakeData:
    def load(self, seed: int) -> _FakeData:
        return self

    def context(self) -> dict:
        return {}


# -- 3. read-only runs are readable ---------------------------------------------------------------


def test_readers_open_the_store_read_only(
    tmp_path: Path, estimator: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import nasforge.runner.store as store_module
    from nasforge.runner.store import TrialStore

    run_dir = tmp_path / "run"
    assert main(["search", str(config_file(tmp_path, estimator)), "--run-dir", str(run_dir), "--quiet"]) == 0
    opened: list[str] = []
    real_connect = sqlite3.connect

    def recording_connect(target: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        opened.append(str(target))
        return real_connect(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store_module.sqlite3, "connect", recording_connect)
    capsys.readouterr()
    assert main(["derive", str(run_dir), "-n", "2"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["archs"]
    assert opened and all(target.startswith("file:") and "mode=ro" in target for target in opened), opened
    store = TrialStore(run_dir / "trials.sqlite", readonly=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.set_meta("x", 1)
    assert len(store.trials()) == 3
    store.close()


def test_a_read_only_store_without_its_wal_files_opens_immutable(
    tmp_path: Path, estimator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a read-only folder SQLite cannot create the -shm file a WAL database needs; with no
    write-ahead log left to read the store is then opened immutable."""
    import nasforge.runner.store as store_module
    from nasforge.runner.store import TrialStore

    run_dir = tmp_path / "run"
    assert main(["search", str(config_file(tmp_path, estimator)), "--run-dir", str(run_dir), "--quiet"]) == 0
    real_connect, opened = sqlite3.connect, []

    def connect(target: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        opened.append(target)
        if "immutable=1" not in target:  # what a read-only folder does to mode=ro alone
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)
    store = TrialStore(run_dir / "trials.sqlite", readonly=True)
    assert len(store.trials()) == 3 and "immutable=1" in opened[-1] and "mode=ro" in opened[-1]
    store.close()


@pytest.mark.skipif(IS_ROOT, reason="root ignores file permissions, so a chmod'ed run is not read-only for it")
def test_derive_test_export_from_a_read_only_run(tmp_path: Path, estimator: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert main(["search", str(config_file(tmp_path, estimator, train=True)), "--run-dir", str(run_dir), "--quiet"]) == 0
    paths = sorted(run_dir.rglob("*"), reverse=True)
    try:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        run_dir.chmod(0o555)
        capsys.readouterr()
        assert main(["derive", str(run_dir), "-n", "2", "-o", str(tmp_path / "top.yaml")]) == 0
        assert main(["test", str(run_dir / "final")]) == 0
        assert main(["export", str(run_dir / "final"), "-o", str(tmp_path / "exported")]) == 0
        assert main(["search", "--resume", str(run_dir), "--quiet"]) == 2
        assert "read-only" in errors(capsys)
    finally:
        run_dir.chmod(0o755)
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_resuming_a_read_only_run_is_a_clear_error(
    tmp_path: Path, estimator: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main(["search", str(config_file(tmp_path, estimator)), "--run-dir", str(run_dir), "--quiet"]) == 0
    files = {p: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    real_access = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if mode & os.W_OK and Path(str(path)).resolve().is_relative_to(run_dir.resolve()):
            return False  # as a read-only mount or another user's run would answer
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    capsys.readouterr()
    assert main(["search", "--resume", str(run_dir), "--quiet", "--set", "budget.trials=5"]) == 2
    text = errors(capsys)
    assert f"cannot resume {run_dir}: it is read-only for this user" in text and "cp -r" in text
    assert {p: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == files


# -- 9. leftovers and Ctrl-C ----------------------------------------------------------------------


def test_leftover_temporary_files_are_removed_on_resume(tmp_path: Path, estimator: str) -> None:
    run_dir = tmp_path / "run"
    assert main(["search", str(config_file(tmp_path, estimator)), "--run-dir", str(run_dir), "--quiet"]) == 0
    leftovers = [run_dir / ".checkpoint.pt.k2j3h4.tmp", run_dir / "supernet" / ".slot-0001.pt.a8s7.tmp"]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a file")
    (run_dir / ".final.x1y2.tmp").mkdir()
    (run_dir / ".final.x1y2.tmp" / "weights.pt").write_bytes(b"half a model")
    (run_dir / "notes.txt").write_text("mine")
    assert main(["search", "--resume", str(run_dir), "--quiet", "--set", "budget.trials=5"]) == 0
    assert not list(run_dir.rglob(".*.tmp"))
    assert (run_dir / "notes.txt").read_text() == "mine" and len(stored(run_dir)) == 5


def test_ctrl_c_names_the_real_run_dir(
    tmp_path: Path, estimator: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nasforge.runner.loop import Runner

    def interrupted(self: Runner, *, resume: bool = False) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "run", interrupted)
    run_dir = tmp_path / "my-run"
    assert main(["search", str(config_file(tmp_path, estimator)), "--run-dir", str(run_dir), "--quiet"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert f"nasforge search --resume {run_dir}" in err and "RUN_DIR" not in err
