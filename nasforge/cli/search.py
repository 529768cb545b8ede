"""``nasforge search``, ``pipeline``, ``derive`` and ``plot``: running a search and reading a run."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from nasforge.cli.arguments import whole_number
from nasforge.cli.console import (
    console,
    epoch_progress,
    err_console,
    fmt,
    log,
    progress_bar,
    setup_logging,
    trial_table,
)
from nasforge.cli.train import load_run, train_and_report
from nasforge.core.errors import CheckpointError, ConfigError
from nasforge.core.trial import Trial
from nasforge.runner.loop import STORE_FILE, SearchResult
from nasforge.runner.rundir import RunLock, require_writable

__all__ = ["add_commands", "cmd_search", "cmd_pipeline", "cmd_derive", "cmd_plot"]


def cmd_search(args: argparse.Namespace) -> int:
    from nasforge.runner.config import load_config
    from nasforge.runner.experiment import CONFIG_FILE

    if args.resume and (args.config or args.run_dir):
        other = f"config {args.config}" if args.config else f"--run-dir {args.run_dir}"
        raise ConfigError(
            f"--resume {args.resume} and {other} conflict: a resumed search reads its own config and stays in its "
            f"own run directory; give one of them"
        )
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / CONFIG_FILE).is_file():
            raise CheckpointError(f"cannot resume {run_dir}: it holds no {CONFIG_FILE} (is it a nasforge run directory?)")
        config_path = run_dir / CONFIG_FILE
    elif args.config:
        config_path = Path(args.config)
    else:
        raise ConfigError("give a config file (nasforge search CONFIG) or a run to resume (--resume RUN_DIR)")
    config = load_config(config_path, args.set)
    if args.run_dir:
        config = config.model_copy(update={"run_dir": args.run_dir})
    if args.workers is not None:
        from nasforge.runner.executors import with_workers

        config = config.model_copy(update={"executor": with_workers(config.executor, args.workers)})
    if args.tensorboard:
        config = config.model_copy(update={"tensorboard": True})
    if config.tensorboard:
        from nasforge.runner.tensorboard import require_tensorboard

        require_tensorboard()  # before the run directory is touched
    run_dir = Path(args.resume) if args.resume else config.resolved_run_dir()
    if not args.resume and (run_dir / STORE_FILE).exists():
        with RunLock(run_dir):  # a search still running there is named by its PID (RunLockedError)
            pass
        _refuse_existing(run_dir)
    if args.resume:
        require_writable(run_dir, "resume")
    before = None if args.resume else (set(run_dir.iterdir()) if run_dir.is_dir() else None)
    try:
        return _locked_search(args, config, config_path, run_dir, before)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; continue the search with `nasforge search --resume {run_dir}`")
        return 130


def _locked_search(args: argparse.Namespace, config: Any, config_path: Path, run_dir: Path, before: set[Path] | None) -> int:
    with RunLock(run_dir):  # the only writer of run_dir until the command ends (a second one exits 2)
        store = run_dir / STORE_FILE
        if not args.resume and store.is_file() and store.stat().st_size > 0:  # one that ended since the check above
            _refuse_existing(run_dir)
        if args.resume and _already_finished(run_dir, config):
            return 0
        try:
            return _search(args, config, config_path, run_dir)
        except Exception:
            if not args.resume:
                _discard_unstarted(run_dir, before)
            raise


def _refuse_existing(run_dir: Path) -> None:
    raise CheckpointError(
        f"run directory {run_dir} already holds a search; resume it with `nasforge search --resume {run_dir}`, "
        "or set another run_dir (--run-dir DIR)"
    )


def _already_finished(run_dir: Path, config: Any) -> bool:
    """Say so and return True when the resumed run has nothing left to do: its search stopped
    under this budget and its winner was trained (or there is no training to do)."""
    from nasforge.runner.experiment import config_fingerprint, finished_search
    from nasforge.runner.loop import check_resumable

    check_resumable(run_dir, config.seed, config_fingerprint(config))  # its own run, and a readable checkpoint
    done = finished_search(run_dir, config)
    if done is None or (config.train is not None and config.data is not None and done["final"] is None):
        return False
    model = f"; its trained model is in {done['final']}" if done["final"] else ""
    console.print(
        f"run {run_dir} is finished: the search stopped ({done['reason']}) after {done['trials']} trials{model}. "
        "Nothing to do; resuming never retrains or overwrites a finished run (to search on, raise the budget: "
        f"nasforge search --resume {run_dir} --set budget.trials=N)"
    )
    return True


def _discard_unstarted(run_dir: Path, before: set[Path] | None) -> None:
    """Remove what a search that stored no trial wrote into ``run_dir`` (the folder itself if it
    did not exist before), so the same command can run again; a run with trials is kept."""
    import logging
    import shutil

    from nasforge.runner.store import TrialStore

    for handler in list(log.handlers):  # search.log is open
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir.resolve():
            log.removeHandler(handler)
            handler.close()
    store_path = run_dir / STORE_FILE
    if store_path.exists() and store_path not in (before or set()):
        store = TrialStore(store_path)
        try:
            if len(store):
                return
        finally:
            store.close()
    if before is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for path in set(run_dir.iterdir()) - before:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _search(args: argparse.Namespace, config: Any, config_path: Path, run_dir: Path) -> int:
    from nasforge.runner.experiment import build_experiment, record_final, save_run_config, write_topk
    from nasforge.runner.final import free_model_folder

    setup_logging(run_dir, args.verbose)
    console.print(f"[bold]nasforge search[/bold] {config_path}  ->  run directory [cyan]{run_dir}[/cyan]")
    experiment = build_experiment(config, str(config_path))
    data = experiment.data
    if data is not None:
        console.print(
            f"data: {data.name} ({len(data.train)} train / {len(data.valid)} valid / {len(data.test)} test, "
            f"{data.in_channels}x{data.input_size[0]}x{data.input_size[1]}, {data.num_classes} classes)"
        )
    console.print(
        f"space: {config.space.type} ({experiment.space.size():,} archs)  strategy: {config.strategy.type}  "
        f"estimator: {config.estimator.type}  objective: {', '.join(experiment.objective.names)}  "
        f"budget: {config.budget.trials or '∞'} trials / {config.budget.seconds or '∞'} s"
    )
    save_run_config(run_dir, config)  # on resume, after _already_finished checked it is this run's config
    objective_name = experiment.objective.names[0]
    with progress_bar("search", disable=args.quiet or not console.is_terminal and not args.progress) as bar:
        task = bar.add_task("", total=config.budget.trials)

        def on_trial(trial: Trial, result: SearchResult) -> None:
            best = result.best(1)
            status = "failed" if not trial.values else f"{objective_name}={fmt(trial.values[0])}"
            best_text = f"best {fmt(best[0].values[0])}" if best else "no result yet"
            bar.update(task, completed=len(result.trials), description=f"trial {trial.number}: {status} | {best_text}")
            log.info("trial %d %s %s", trial.number, experiment.space.format(trial.arch), status)
            if not console.is_terminal and not args.quiet and (trial.number + 1) % max(1, (config.budget.trials or 100) // 10) == 0:
                console.print(f"  {len(result.trials)} trials done, {best_text}")

        runner = experiment.runner(run_dir, on_trial)
        if not bar.disable:  # a trial's epochs as a second bar (only scratch/supernet/dnas report them)
            runner.context = replace(runner.context, progress=epoch_progress(bar))
        try:
            result = runner.run(resume=bool(args.resume))
        finally:
            runner.store.close()
            if experiment.tensorboard is not None:
                experiment.tensorboard.close()
                console.print(f"TensorBoard event files in {run_dir / 'tb'} (tensorboard --logdir {run_dir / 'tb'})")
    failed = sum(1 for t in result.trials if not t.values)
    console.print(f"search stopped: {result.stopped_because} ({len(result.trials)} trials, {failed} failed)")
    chosen = write_topk(run_dir, experiment.space, result, config.top_k)
    if not chosen:
        console.print("[yellow]no trial completed feasibly, so there is nothing to derive or train[/yellow]")
        return 1
    console.print(trial_table(experiment.space, chosen, experiment.objective.names, f"top {len(chosen)} (also in {run_dir}/topk.yaml)"))
    best = chosen[0]
    console.print(f"best arch: [green]{experiment.space.format(best.arch)}[/green]")
    shown = ", ".join(f"{k}={fmt(v)}" for k, v in best.metrics.items())
    console.print(f"its search metrics: {shown}")
    if config.train is not None and data is not None:
        out = free_model_folder(run_dir / "final")
        if out.name != "final":
            console.print(f"{run_dir / 'final'} holds the model of an earlier stage of this run and is kept; this one goes to {out}")
        train_and_report(experiment, best, out, args.quiet)
        record_final(run_dir, out, len(result.trials))
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from nasforge.runner.pipeline import load_pipeline, load_run, plan, run_pipeline

    if args.resume:
        run_dir = Path(args.resume)
        config = load_run(run_dir)
    elif args.config:
        config = load_pipeline(args.config)
        run_dir = Path(args.run_dir) if args.run_dir else config.resolved_run_dir()
    else:
        raise ConfigError("give a pipeline config (nasforge pipeline CONFIG) or a run to resume (--resume RUN_DIR)")
    setup_logging(run_dir, args.verbose)
    console.print(f"[bold]nasforge pipeline[/bold] {config.name}  ->  run directory [cyan]{run_dir}[/cyan]")

    steps = plan(config)
    with progress_bar("pipeline", disable=not console.is_terminal) as bar:
        step_task = bar.add_task("", total=len(steps))
        trial_task = bar.add_task("", total=None, visible=False)
        counted: set[str] = set()

        def report(line: str) -> None:
            console.print(line)
            for number, name in enumerate(steps, start=1):  # "step N/M NAME (kind): done earlier/finished"
                if line.startswith(f"step {number}/{len(steps)} {name} ") and ": running" not in line:
                    counted.add(name)
                elif line.startswith(f"step {number}/{len(steps)} {name} "):
                    bar.update(step_task, description=f"step {name}")
                    bar.reset(trial_task, total=None, visible=False)
            bar.update(step_task, completed=len(counted))

        def on_trial(step: str, trial: Trial, result: SearchResult) -> None:
            status = "failed" if not trial.values else f"{fmt(trial.values[0])}"
            log.info("step %s trial %d: %s", step, trial.number, status)
            best = result.best(1)
            best_text = f" | best {fmt(best[0].values[0])}" if best else ""
            bar.update(
                trial_task, completed=len(result.trials), visible=True,
                description=f"{step}: trial {trial.number}: {status}{best_text}",
            )

        try:
            outputs = run_pipeline(config, run_dir, resume=bool(args.resume), report=report, on_trial=on_trial)
        except KeyboardInterrupt:
            err_console.print(f"interrupted; continue the pipeline with `nasforge pipeline --resume {run_dir}`")
            return 130
    for step, values in outputs.items():
        shown = {k: v for k, v in values.items() if k in ("best", "value", "hparams", "test_acc") and v != {}}
        console.print(f"  {step}: " + ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in shown.items()))
    return 0


def cmd_derive(args: argparse.Namespace) -> int:
    from nasforge.runner.experiment import build_experiment, load_trials, top_trials, topk_text, write_topk

    config, run_dir = load_run(Path(args.run_dir))
    trials = load_trials(run_dir)
    experiment = build_experiment(config.model_copy(update={"data": None}) if config.data is None else config, str(run_dir))
    result = SearchResult(trials, experiment.objective, winner=type(experiment.strategy).winner)
    if args.output:
        chosen = write_topk(run_dir, experiment.space, result, args.n, path=Path(args.output), whole_front=False)
        console.print(f"wrote the top {len(chosen)} archs of {len(result.trials)} trials to {args.output}")
    else:
        sys.stdout.write(topk_text(experiment.space, result, top_trials(result, args.n, whole_front=False)))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from nasforge.plots import cell_text, draw_cell, plot_alphas
    from nasforge.runner.experiment import load_trials

    run_dir = Path(args.run_dir)
    # a read-only run is plotted into the working directory instead of beside its files
    writable = os.access(run_dir, os.W_OK)

    def image(name: str) -> Path:
        return run_dir / name if writable else Path(f"{run_dir.resolve().name}-{name}")

    output = plot_alphas(run_dir, args.output or image("alphas.png"))
    console.print(f"wrote the alphas heatmap to {output}")
    trials = load_trials(run_dir) if (run_dir / STORE_FILE).is_file() else []
    if trials:
        last = max(trials, key=lambda t: t.number)
        console.print(f"derived after trial {last.number}:\n{cell_text(last.arch)}")
        drawn = draw_cell(last.arch, image("cell.png"))
        console.print(f"drew the cell: {', '.join(str(path) for path in drawn)}")
    return 0


def add_commands(sub: Any) -> None:
    """The ``search``, ``pipeline``, ``derive`` and ``plot`` sub-commands."""
    p = sub.add_parser("search", help="run a search from a YAML config (or resume one)")
    p.add_argument("config", nargs="?", help="the experiment's YAML config")
    p.add_argument("--resume", metavar="RUN_DIR", help="resume the search in RUN_DIR (killed or stopped)")
    p.add_argument("--run-dir", help="where the run is written (default: the config's run_dir, else runs/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. budget.trials=20")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard event files to RUN_DIR/tb (needs nasforge[tensorboard])")
    p.add_argument("-v", "--verbose", action="store_true", help="log every trial to the console")
    p.add_argument(
        "--workers", type=whole_number("--workers", 1), metavar="N",
        help="trials in parallel: N>1 runs the config's executor (default local: N processes), 1 sequential",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("pipeline", help="run the steps of a pipeline config (search, tune, train), or resume one")
    p.add_argument("config", nargs="?", help="the pipeline's YAML config")
    p.add_argument("--resume", metavar="RUN_DIR", help="resume the pipeline in RUN_DIR: finished steps are skipped")
    p.add_argument("--run-dir", help="where the pipeline is written (default: the config's run_dir, else runs/<name>)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every trial to the console")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("derive", help="write the top-K archs of a run to YAML")
    p.add_argument("run_dir")
    p.add_argument("-n", type=whole_number("-n", 1), default=5, help="how many archs (at least 1; default 5)")
    p.add_argument("-o", "--output", help="YAML file to write (default: print)")
    p.set_defaults(func=cmd_derive)

    p = sub.add_parser("plot", help="draw a differentiable search's alphas and print its derived cell")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", help="image file to write (default: RUN_DIR/alphas.png; for a read-only run, NAME-alphas.png here)")
    p.set_defaults(func=cmd_plot)
