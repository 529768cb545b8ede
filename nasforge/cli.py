"""The ``nasforge`` command: search, pipeline, derive, train, test, export, eval-arch, plot, profile, registry, gen-config.

Every user mistake ends in a one-paragraph message on stderr and exit status 2, never a
traceback; nothing already written by earlier runs is touched.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, ConsoleDimensions
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nasforge.core import registry
from nasforge.core.errors import CheckpointError, ConfigError, NasforgeError
from nasforge.core.trial import Trial
from nasforge.runner.loop import SearchResult

__all__ = ["main"]



class _Console(Console):
    """A rich console that wraps only on a terminal: logs, pipes and files get one line per
    message, whatever the terminal's width or the length of the paths printed."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(_UNWRAPPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


_UNWRAPPED_WIDTH = 100_000
console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)
log = logging.getLogger("nasforge")


def _setup_logging(run_dir: Path | None, verbose: bool) -> None:
    log.handlers.clear()
    log.setLevel(logging.DEBUG)
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False, show_time=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.addHandler(handler)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(run_dir / "search.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        file_handler.setLevel(logging.DEBUG)
        log.addHandler(file_handler)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def _trial_table(space: Any, trials: Sequence[Trial], names: Sequence[str], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("trial", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("arch")
    for rank, trial in enumerate(trials, start=1):
        table.add_row(str(rank), str(trial.number), *(_fmt(v) for v in trial.values), space.format(trial.arch))
    return table


# -- search ----------------------------------------------------------------------------------


def cmd_search(args: argparse.Namespace) -> int:
    from nasforge.runner.config import load_config
    from nasforge.runner.experiment import CONFIG_FILE, build_experiment, save_run_config, write_topk

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
    run_dir = Path(args.resume) if args.resume else config.resolved_run_dir()
    if not args.resume and (run_dir / "trials.sqlite").exists():
        raise CheckpointError(
            f"run directory {run_dir} already holds a search; resume it with `nasforge search --resume {run_dir}`, "
            "or set another run_dir (--run-dir DIR)"
        )
    _setup_logging(run_dir, args.verbose)
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
    save_run_config(run_dir, config)
    objective_name = experiment.objective.names[0]
    with Progress(
        TextColumn("[bold]search"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=args.quiet or not console.is_terminal and not args.progress,
    ) as bar:
        task = bar.add_task("", total=config.budget.trials)

        def on_trial(trial: Trial, result: SearchResult) -> None:
            best = result.best(1)
            status = "failed" if not trial.values else f"{objective_name}={_fmt(trial.values[0])}"
            best_text = f"best {_fmt(best[0].values[0])}" if best else "no result yet"
            bar.update(task, completed=len(result.trials), description=f"trial {trial.number}: {status} | {best_text}")
            log.info("trial %d %s %s", trial.number, experiment.space.format(trial.arch), status)
            if not console.is_terminal and not args.quiet and (trial.number + 1) % max(1, (config.budget.trials or 100) // 10) == 0:
                console.print(f"  {len(result.trials)} trials done, {best_text}")

        runner = experiment.runner(run_dir, on_trial)
        try:
            result = runner.run(resume=bool(args.resume))
        finally:
            runner.store.close()
    failed = sum(1 for t in result.trials if not t.values)
    console.print(f"search stopped: {result.stopped_because} ({len(result.trials)} trials, {failed} failed)")
    chosen = write_topk(run_dir, experiment.space, result, config.top_k)
    if not chosen:
        console.print("[yellow]no trial completed feasibly, so there is nothing to derive or train[/yellow]")
        return 1
    console.print(_trial_table(experiment.space, chosen, experiment.objective.names, f"top {len(chosen)} (also in {run_dir}/topk.yaml)"))
    best = chosen[0]
    console.print(f"best arch: [green]{experiment.space.format(best.arch)}[/green]")
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in best.metrics.items())
    console.print(f"its search metrics: {shown}")
    if config.train is not None and data is not None:
        _train_and_report(experiment, best, run_dir / "final", args.quiet)
    return 0


def _train_and_report(
    experiment: Any, trial: Trial, out_dir: Path, quiet: bool, init_from: Path | None = None
) -> dict[str, float]:
    from nasforge.hardware.latency import find_latency_model
    from nasforge.runner.final import train_final
    from nasforge.spaces.hparams import apply_hparams, hparams_of
    from nasforge.tasks.training import TrainSettings

    config = experiment.config
    try:  # an arch with `hp.` choices (with_hparams, hpo spaces) trains with its own values
        settings = apply_hparams(TrainSettings.model_validate(config.train or {}), hparams_of(trial.arch))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    assert config.data is not None
    start = "from scratch" if init_from is None else f"from the weights of the supernet in {init_from}"
    console.print(
        f"training the arch {start} on train+valid for {settings.epochs} epochs, then testing it once on the held-out test set"
    )
    with Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
        console=console, disable=quiet or not console.is_terminal,
    ) as bar:
        task = bar.add_task("", total=settings.epochs)

        def progress(epoch: int, total: int, metrics: dict[str, float]) -> None:
            text = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
            bar.update(task, completed=epoch, description=text)

        metrics = train_final(
            experiment.space, config.space, experiment.data, config.data, trial.arch, settings,
            seed=config.seed, out_dir=out_dir, device=experiment.device, progress=progress,
            latency=find_latency_model(experiment.space, experiment.estimator), init_from=init_from,
        )
    console.print(
        f"[bold green]test accuracy {metrics['test_acc']:.2f}%[/bold green] "
        f"(params {int(metrics['params']):,}, FLOPs {int(metrics['flops']):,}, trained in {metrics['train_seconds']:.1f} s); "
        f"model saved in [cyan]{out_dir}[/cyan] (nasforge test / nasforge export read it)"
    )
    if "latency_measured_ms" in metrics:
        console.print(
            f"latency: predicted {metrics['latency_predicted_ms']:.3f} ms, measured {metrics['latency_measured_ms']:.3f} ms "
            f"on this machine (measured/predicted {metrics['latency_measured_over_predicted']:.2f})"
        )
    return metrics


# -- pipeline --------------------------------------------------------------------------------


def cmd_pipeline(args: argparse.Namespace) -> int:
    from nasforge.runner.pipeline import load_pipeline, load_run, run_pipeline

    if args.resume:
        run_dir = Path(args.resume)
        config = load_run(run_dir)
    elif args.config:
        config = load_pipeline(args.config)
        run_dir = Path(args.run_dir) if args.run_dir else config.resolved_run_dir()
    else:
        raise ConfigError("give a pipeline config (nasforge pipeline CONFIG) or a run to resume (--resume RUN_DIR)")
    _setup_logging(run_dir, args.verbose)
    console.print(f"[bold]nasforge pipeline[/bold] {config.name}  ->  run directory [cyan]{run_dir}[/cyan]")

    def on_trial(step: str, trial: Trial, result: SearchResult) -> None:
        status = "failed" if not trial.values else f"{_fmt(trial.values[0])}"
        log.info("step %s trial %d: %s", step, trial.number, status)

    outputs = run_pipeline(config, run_dir, resume=bool(args.resume), report=console.print, on_trial=on_trial)
    for step, values in outputs.items():
        shown = {k: v for k, v in values.items() if k in ("best", "value", "hparams", "test_acc") and v != {}}
        console.print(f"  {step}: " + ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in shown.items()))
    return 0


# -- derive / train / test / export / eval-arch ----------------------------------------------


def _load_run(run_dir: Path) -> tuple[Any, Any]:
    from nasforge.runner.config import load_config
    from nasforge.runner.experiment import CONFIG_FILE

    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{run_dir} is not a nasforge run directory ({CONFIG_FILE} is missing)")
    return load_config(run_dir / CONFIG_FILE), run_dir


def cmd_derive(args: argparse.Namespace) -> int:
    from nasforge.runner.experiment import build_experiment
    from nasforge.runner.loop import STORE_FILE, SearchResult
    from nasforge.runner.store import TrialStore

    config, run_dir = _load_run(Path(args.run_dir))
    if not (run_dir / STORE_FILE).is_file():
        raise CheckpointError(f"{run_dir} holds no trials yet ({STORE_FILE} is missing)")
    experiment = build_experiment(config.model_copy(update={"data": None}) if config.data is None else config, str(run_dir))
    store = TrialStore(run_dir / STORE_FILE)
    result = SearchResult(store.trials(), experiment.objective)
    store.close()
    chosen = result.pareto_front()[: args.n] if experiment.objective.n_objectives > 1 else result.best(args.n)
    entries = [
        {"rank": r, "trial": t.number, "arch": experiment.space.format(t.arch), "metrics": t.metrics}
        for r, t in enumerate(chosen, start=1)
    ]
    text = yaml.safe_dump({"archs": entries}, sort_keys=False)
    if args.output:
        from nasforge.core.atomic import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode())
        console.print(f"wrote the top {len(entries)} archs of {len(result.trials)} trials to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nasforge.runner.config import load_config
    from nasforge.runner.experiment import TOPK_FILE, arch_from_text, build_experiment

    init_from = Path(args.init_from) if args.init_from else None
    run = args.run or (None if args.config else args.init_from)  # --init-from alone: that run's settings
    loaded = _load_run(Path(run)) if run else None  # a missing run directory is named first
    if init_from is not None:
        from nasforge.estimators.supernet import supernet_checkpoints

        supernet_checkpoints(init_from)  # before anything is built or announced
    if loaded:
        config, run_dir = loaded
        source = str(run_dir)
    elif args.config:
        config, run_dir, source = load_config(Path(args.config)), None, args.config
    else:
        raise ConfigError("give the run to take the space and data from (--run RUN_DIR) or a config (--config FILE)")
    overrides = {k: v for k, v in {"epochs": args.epochs}.items() if v is not None}
    config = config.model_copy(update={"train": {**(config.train or {}), **overrides}})
    if config.data is None:
        raise ConfigError(f"{source} has no data section; training needs a dataset")
    experiment = build_experiment(config, source)
    arch_text = args.arch
    if arch_text is None:
        if run_dir is None or not (run_dir / TOPK_FILE).is_file():
            raise ConfigError("give the arch to train (--arch TEXT or FILE); without --run there is no top-k to take it from")
        arch_text = str(run_dir / TOPK_FILE)
    arch = arch_from_text(experiment.space, arch_text, args.index)
    default_folder = "final" if init_from is None else "final-inherited"  # never over the search's own final model
    out = Path(args.out) if args.out else (run_dir / default_folder if run_dir else Path("runs") / f"{config.name}-train")
    console.print(f"training {experiment.space.format(arch)}")
    trial = Trial(number=-1, arch=arch, seed=config.seed)
    _train_and_report(experiment, trial, out, args.quiet, init_from)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from nasforge.tasks.model_folder import load_model_folder
    from nasforge.tasks.training import evaluate

    folder = load_model_folder(args.model_dir)
    acc, loss = evaluate(folder.model, folder.data.test, batch_size=512)
    console.print(f"{folder.space.format(folder.arch)}: test accuracy {acc:.2f}%, test loss {loss:.4f} on {len(folder.data.test)} samples")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from nasforge.export import export_model
    from nasforge.tasks.model_folder import load_model_folder

    folder = load_model_folder(args.model_dir)
    example = torch.randn(2, *folder.input_shape[1:])
    norm = folder.description.get("input_normalization")
    how = (
        f"Inputs: shape {list(folder.input_shape)}, pixels scaled to [0, 1], then per channel (x - mean) / std "
        f"with mean={norm['mean']} and std={norm['std']}."
        if norm
        else f"Inputs: shape {list(folder.input_shape)}, pixels scaled to [0, 1]."
    )
    out = export_model(folder.model, example, args.output, doc=f"nasforge export of {folder.space.format(folder.arch)}.\n\n{how}")
    console.print(f"exported to {out}/model.py and {out}/weights.pt; load with: import model; net = model.load()")
    return 0


def cmd_eval_arch(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nasforge.core.seeding import derive_seed
    from nasforge.runner.config import load_config
    from nasforge.runner.experiment import arch_from_text, build_experiment

    config = load_config(Path(args.config), args.set)
    experiment = build_experiment(config, args.config)
    arch = arch_from_text(experiment.space, args.arch, args.index)
    runner = experiment.runner(run_dir=None)
    ctx = replace(runner.context, run_dir=None, seed=derive_seed(config.seed, "eval-arch"))
    result = experiment.estimator.estimate(arch, ctx)
    runner.store.close()
    console.print(f"{experiment.space.format(arch)}")
    for key, value in {**result.metrics, **{f"cost.{k}": v for k, v in result.cost.items()}}.items():
        console.print(f"  {key}: {_fmt(float(value))}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from nasforge.plots import cell_text, draw_cell, plot_alphas
    from nasforge.runner.loop import STORE_FILE
    from nasforge.runner.store import TrialStore

    run_dir = Path(args.run_dir)
    output = plot_alphas(run_dir, args.output or run_dir / "alphas.png")
    console.print(f"wrote the alphas heatmap to {output}")
    if (run_dir / STORE_FILE).is_file():
        store = TrialStore(run_dir / STORE_FILE)
        trials = store.trials()
        store.close()
        if trials:
            last = max(trials, key=lambda t: t.number)
            console.print(f"derived after trial {last.number}:\n{cell_text(last.arch)}")
            drawn = draw_cell(last.arch, run_dir / "cell.png")
            console.print(f"drew the cell: {', '.join(str(path) for path in drawn)}")
    return 0


# -- registry / gen-config ---------------------------------------------------------------------


def cmd_registry(args: argparse.Namespace) -> int:
    import json

    from nasforge.core.capabilities import declared

    rows = [
        {
            "kind": reg.kind,
            "name": reg.name,
            "summary": reg.summary,
            "tags": sorted(reg.tags),
            "module": getattr(reg.target, "__module__", ""),
            **({"capabilities": list(declared(reg.target))} if reg.kind == "space" else {}),
        }
        for reg in registry.registrations(args.kind, tag=args.tag)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    show_capabilities = any("capabilities" in row for row in rows)
    if not console.is_terminal:  # pipes and files: one line per component, nothing wrapped
        kind_width = max((len(row["kind"]) for row in rows), default=0)
        name_width = max((len(row["name"]) for row in rows), default=0)
        for row in rows:
            extras = [f"[tags: {', '.join(row['tags'])}]"] if row["tags"] else []
            if row.get("capabilities"):
                extras.append(f"[capabilities: {', '.join(row['capabilities'])}]")
            line = f"{row['kind']:<{kind_width}}  {row['name']:<{name_width}}  {row['summary']}"
            print(" ".join([line, *extras]).rstrip())
        return 0
    table = Table(title="registered components")
    for column in ("kind", "type", "tags", *(("capabilities",) if show_capabilities else ()), "summary"):
        table.add_column(column)
    for row in rows:
        capabilities = (", ".join(row.get("capabilities", [])),) if show_capabilities else ()
        table.add_row(row["kind"], row["name"], ", ".join(row["tags"]), *capabilities, row["summary"])
    console.print(table, markup=False)
    return 0


def cmd_gen_config(args: argparse.Namespace) -> int:
    from nasforge.runner.config import parse_config
    from nasforge.runner.gen_config import FILL_IN, generate_config

    text = generate_config(args.space, strategy=args.strategy, estimator=args.estimator)
    try:
        parse_config(yaml.safe_load(text), "<generated config>")  # what we hand out must load...
    except ConfigError as exc:
        if FILL_IN not in text:
            raise
        # ...except where a component has a required option with no example value
        err_console.print(f"[yellow]set the options marked `{FILL_IN}` before running this config[/yellow] ({exc})")
    if args.output:
        from nasforge.core.atomic import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode())
        console.print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


# -- profile -----------------------------------------------------------------------------------


def cmd_profile(args: argparse.Namespace) -> int:
    import numpy as np

    from nasforge.hardware.costmodels import evaluate
    from nasforge.hardware.fitting import input_context
    from nasforge.hardware.profile import (
        LatencyTable,
        energy_counter,
        no_energy_counter_reason,
        profile_space,
        table_vs_measured,
    )

    options = yaml.safe_load(args.space_options) if args.space_options else {}
    if not isinstance(options, dict):
        raise ConfigError(f"--space-options must be a YAML mapping, got {args.space_options!r}")
    try:
        size = [int(d) for d in args.input_size.split(",")]
    except ValueError:
        raise ConfigError(f"--input-size must be C,H,W (e.g. 3,32,32), got {args.input_size!r}") from None
    if len(size) != 3:
        raise ConfigError(f"--input-size must be C,H,W (e.g. 3,32,32), got {args.input_size!r}")
    space = registry.create("space", args.space, options, context=input_context(size), where="--space")
    measure_energy = args.energy and args.device == "cpu" and energy_counter() is not None
    if args.energy and not measure_energy:
        reason = (no_energy_counter_reason() if args.device == "cpu"
                  else "energy not measured: RAPL energy is read on --device cpu (PyTorch) only")
        console.print(reason, soft_wrap=True, markup=False)
    table = profile_space(
        space, [args.batch, *size], args.device, args.threads, args.warmup, args.repeats, energy=measure_energy
    )
    if args.merge:
        table = LatencyTable.load(args.merge).merge(table)
    table.save(args.out)
    console.print(f"measured {len(table.blocks)} blocks on {table.device['cpu']} ({table.device['device']}, "
                  f"{table.device['threads']} thread(s)); wrote {args.out}")
    if measure_energy:
        console.print(f"energy per forward of {len(table.energy_mj)} blocks from {energy_counter()}")
    rng = np.random.default_rng(0)
    p10, p50, p90 = np.percentile([table.predict(space.sample(rng)) for _ in range(1000)], [10, 50, 90])
    console.print(f"predicted latency of 1,000 sampled archs: 10% {p10:.3f} ms, median {p50:.3f} ms, 90% {p90:.3f} ms")
    if args.check:
        rows = table_vs_measured(space, table, args.check, seed=2, repeats=args.repeats, warmup=args.warmup)
        scores = evaluate([m for _, _, m in rows], [p for _, p, _ in rows])
        console.print(f"table vs end-to-end on {args.check} sampled archs: Spearman {scores['spearman']:.3f}, "
                      f"within 10% {scores['within_10pct']:.2f}, mean measured/table "
                      f"{sum(m / p for _, p, m in rows) / len(rows):.2f}")
    return 0


def cmd_costmodel(args: argparse.Namespace) -> int:
    import numpy as np

    from nasforge.hardware.costmodels import evaluate
    from nasforge.hardware.fitting import FittedCostModel, fit_cost_model, measure_children
    from nasforge.hardware.profile import LatencyTable

    if args.action == "fit":
        if not (args.space and args.table and args.out):
            raise ConfigError("costmodel fit needs --space, --table and -o/--out")
        options = yaml.safe_load(args.space_options) if args.space_options else {}
        if not isinstance(options, dict):
            raise ConfigError(f"--space-options must be a YAML mapping, got {args.space_options!r}")
        table = LatencyTable.load(args.table)
        console.print(f"measuring {args.archs} sampled children end to end to fit {args.model!r}")
        fitted = fit_cost_model(args.space, options, table, args.model, args.archs, seed=args.seed, repeats=args.repeats)
        fitted.save(args.out)
        scores = fitted.fit_scores
        console.print(
            f"wrote {args.out}; on its training archs: RMSE {scores['rmse']:.3f} ms, Spearman {scores['spearman']:.3f}, "
            f"within ±10% {scores['within_10pct']:.2f}"
        )
        return 0
    if not args.model_file:
        raise ConfigError("costmodel eval needs the fitted model file: nasforge costmodel eval MODEL.pkl")
    fitted = FittedCostModel.load(args.model_file)
    if not fitted.fit_archs:
        console.print(f"note: {args.model_file} does not record its training archs (saved by an older nasforge); "
                      "some evaluation children may be among them")
    archs, measured = measure_children(
        fitted.space(), fitted.table, args.archs, seed=args.seed + 1, repeats=args.repeats, exclude=fitted.fit_archs
    )
    naive = np.array([fitted.table.predict(a) for a in archs])
    report = Table(title=f"{fitted.name} vs the table's naive sum on {len(archs)} held-out children")
    for column in ("model", "RMSE ms", "Spearman", "within ±10%"):
        report.add_column(column)
    for name, predicted in ((fitted.name, fitted.predict(archs)), ("naive sum", naive)):
        scores = evaluate(measured, predicted)
        report.add_row(name, f"{scores['rmse']:.3f}", f"{scores['spearman']:.3f}", f"{scores['within_10pct']:.2f}")
    console.print(report)
    return 0


# -- entry point -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasforge", description="Modular neural architecture search on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("search", help="run a search from a YAML config (or resume one)")
    p.add_argument("config", nargs="?", help="the experiment's YAML config")
    p.add_argument("--resume", metavar="RUN_DIR", help="resume the search in RUN_DIR (killed or stopped)")
    p.add_argument("--run-dir", help="where the run is written (default: the config's run_dir, else runs/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. budget.trials=20")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.add_argument("-v", "--verbose", action="store_true", help="log every trial to the console")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("pipeline", help="run the steps of a pipeline config (search, tune, train), or resume one")
    p.add_argument("config", nargs="?", help="the pipeline's YAML config")
    p.add_argument("--resume", metavar="RUN_DIR", help="resume the pipeline in RUN_DIR: finished steps are skipped")
    p.add_argument("--run-dir", help="where the pipeline is written (default: the config's run_dir, else runs/<name>)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every trial to the console")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("derive", help="write the top-K archs of a run to YAML")
    p.add_argument("run_dir")
    p.add_argument("-n", type=int, default=5, help="how many archs (default 5)")
    p.add_argument("-o", "--output", help="YAML file to write (default: print)")
    p.set_defaults(func=cmd_derive)

    p = sub.add_parser("train", help="train one arch on the whole training set and test it")
    p.add_argument("--run", help="take the space, data and training settings from this run directory")
    p.add_argument("--config", help="...or from this config file")
    p.add_argument("--arch", help="the arch (its notation or JSON), or a YAML file from derive/topk (default: the run's best)")
    p.add_argument("--index", type=int, default=0, help="which arch of a YAML file (default 0, the best)")
    p.add_argument("--epochs", type=int, help="override the number of training epochs")
    p.add_argument(
        "--init-from", metavar="RUN_DIR",
        help="fine-tune from the weights the arch inherits from this one-shot run's supernet "
        "(also the default --run, and its best arch the default --arch)",
    )
    p.add_argument("--out", help="model folder to write (default: RUN_DIR/final, RUN_DIR/final-inherited with --init-from)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("test", help="evaluate a trained model folder on its held-out test set")
    p.add_argument("model_dir")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("export", help="export a trained model folder as plain PyTorch (model.py + weights.pt)")
    p.add_argument("model_dir")
    p.add_argument("-o", "--output", required=True, help="folder to write model.py and weights.pt into")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval-arch", help="estimate one arch with a config's estimator")
    p.add_argument("config")
    p.add_argument("arch")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_eval_arch)

    p = sub.add_parser("plot", help="draw a differentiable search's alphas and print its derived cell")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", help="image file to write (default: RUN_DIR/alphas.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("profile", help="measure a space's blocks on this machine into a latency table (JSON)")
    p.add_argument("--space", required=True, help="registered space, e.g. nb201")
    p.add_argument("--space-options", help="the space's options as YAML, e.g. '{C: 16, N: 5}'")
    p.add_argument("--input-size", required=True, help="C,H,W of one input, e.g. 3,32,32")
    p.add_argument("--batch", type=int, default=1, help="batch size to time (default 1)")
    p.add_argument("-o", "--out", required=True, help="latency table JSON to write")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda, or onnxruntime (ONNX Runtime's CPU provider; `pip install onnxruntime onnx`)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads while measuring (torch's or ONNX Runtime's; default 1)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=20, help="timed runs per block; the median is kept")
    p.add_argument("--merge", help="an existing table (same device) to merge the new measurements into")
    p.add_argument("--check", type=int, default=0, metavar="N", help="also time N sampled whole networks against the table")
    p.add_argument("--energy", action="store_true", help="also record each block's energy from the CPU's RAPL counter")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("costmodel", help="fit a latency cost model on measured children, or evaluate one")
    p.add_argument("action", choices=["fit", "eval"])
    p.add_argument("model_file", nargs="?", help="eval: the fitted model file")
    p.add_argument("--space", help="fit: registered space, e.g. nb201")
    p.add_argument("--space-options", help="fit: the space's options as YAML")
    p.add_argument("--table", help="fit: latency table from `nasforge profile`")
    p.add_argument("--model", default="linear_sum", help="a registered cost model (`nasforge registry cost_model`)")
    p.add_argument("--archs", type=int, default=50, help="children to measure end to end (default 50)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", help="fit: where to write the fitted model")
    p.set_defaults(func=cmd_costmodel)

    p = sub.add_parser("registry", help="list registered components (every kind, or one)")
    p.add_argument("kind", nargs="?", choices=list(registry.KINDS), help="only this kind")
    p.add_argument("--tag", help="only components with this tag")
    p.add_argument("--json", action="store_true", help="print a JSON list of {kind, name, summary, tags, module}")
    p.set_defaults(func=cmd_registry)

    p = sub.add_parser("gen-config", help="print a sample config for a space, listing every compatible component")
    p.add_argument("--space", required=True, help="registered space type")
    p.add_argument("--strategy", help="strategy to write out (default: evolution)")
    p.add_argument("--estimator", help="estimator to write out (default: scratch)")
    p.add_argument("-o", "--output", help="file to write (default: print)")
    p.set_defaults(func=cmd_gen_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for user errors)."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except NasforgeError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; a search can be continued with `nasforge search --resume RUN_DIR`")
        return 130


if __name__ == "__main__":
    sys.exit(main())

