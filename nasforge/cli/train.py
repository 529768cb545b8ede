"""``nasforge train``, ``test``, ``export`` and ``eval-arch``: one arch, trained, tested, exported
or estimated."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from nasforge.cli.arguments import whole_number
from nasforge.cli.console import console, fmt, progress_bar
from nasforge.core.errors import CheckpointError, ConfigError
from nasforge.core.trial import Trial

__all__ = ["add_commands", "load_run", "train_and_report", "cmd_train", "cmd_test", "cmd_export", "cmd_eval_arch"]


def load_run(run_dir: Path) -> tuple[Any, Path]:
    """The config of the search run in ``run_dir``, and ``run_dir``."""
    from nasforge.runner.config import load_config
    from nasforge.runner.experiment import CONFIG_FILE

    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{run_dir} is not a nasforge run directory ({CONFIG_FILE} is missing)")
    return load_config(run_dir / CONFIG_FILE), run_dir


def train_and_report(
    experiment: Any, trial: Trial, out_dir: Path, quiet: bool, init_from: Path | None = None, force: bool = False
) -> dict[str, float]:
    """The runner's final training of ``trial``'s arch (:func:`nasforge.runner.final.train_arch`),
    with a progress bar and its results printed."""
    from nasforge.runner.final import train_arch

    config = experiment.config
    assert config.data is not None
    with progress_bar("train", disable=quiet or not console.is_terminal) as bar:
        task = bar.add_task("", total=None)

        def progress(epoch: int, total: int, metrics: dict[str, float]) -> None:
            text = ", ".join(f"{k}={fmt(v)}" for k, v in metrics.items())
            bar.update(task, total=total, completed=epoch, description=text)

        metrics = train_arch(
            experiment.space, config.space, experiment.data, config.data, trial.arch, config.train,
            seed=config.seed, out_dir=out_dir, device=experiment.device, estimator=experiment.estimator,
            init_from=init_from, progress=progress, report=console.print, force=force,
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


def cmd_train(args: argparse.Namespace) -> int:
    from nasforge.runner.config import load_config
    from nasforge.runner.experiment import TOPK_FILE, arch_from_text, build_experiment
    from nasforge.runner.final import check_model_folder, free_model_folder
    from nasforge.runner.rundir import RunLock

    if args.run and args.config:
        raise ConfigError(
            f"--run {args.run} and --config {args.config} conflict: the space, data and training settings come from "
            "one of them; give one"
        )
    init_from = Path(args.init_from) if args.init_from else None
    run = args.run or (None if args.config else args.init_from)  # --init-from alone: that run's settings
    loaded = load_run(Path(run)) if run else None  # a missing run directory is named first
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
    inside_run = run_dir is not None and out.resolve().is_relative_to(run_dir.resolve())
    with RunLock(run_dir) if inside_run and run_dir is not None else nullcontext():  # the run's only writer meanwhile
        if not args.out and not args.force:  # a model folder is never replaced: the next free name
            free = free_model_folder(out)
            if free != out:
                console.print(f"{out} already holds a trained model and is kept; this one goes to {free} (--force replaces it)")
            out = free
        check_model_folder(out, args.force)  # an explicit --out that exists needs --force
        console.print(f"training {experiment.space.format(arch)}")
        trial = Trial(number=-1, arch=arch, seed=config.seed)
        train_and_report(experiment, trial, out, args.quiet, init_from, force=args.force)
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

    target = Path(args.output)
    if target.exists() and not target.is_dir():
        raise ConfigError(
            f"export -o {target}: a file of that name exists and is left alone; -o takes a folder (new, or one to "
            "write model.py and weights.pt into)"
        )
    folder = load_model_folder(args.model_dir)
    example = torch.randn(2, *folder.input_shape[1:])
    norm = folder.description.get("input_normalization")
    how = (
        f"Inputs: shape {list(folder.input_shape)}, pixels scaled to [0, 1], then per channel (x - mean) / std "
        f"with mean={norm['mean']} and std={norm['std']}."
        if norm
        else f"Inputs: shape {list(folder.input_shape)}, pixels scaled to [0, 1]."
    )
    try:
        out = export_model(folder.model, example, target, doc=f"nasforge export of {folder.space.format(folder.arch)}.\n\n{how}")
    except (PermissionError, FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(
            f"export -o {target}: cannot write {exc.filename or target} ({exc.strerror or type(exc).__name__}); "
            f"choose a folder you can write to. The model folder {args.model_dir} is untouched"
        ) from None
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
    if console.is_terminal:  # a spinner, its text the estimator's last epoch; nothing in pipes
        with console.status(f"estimating {experiment.space.format(arch)} with {config.estimator.type}") as spinner:

            def progress(what: str, done: int, total: int, metrics: Any) -> None:
                shown = "  ".join(f"{k} {fmt(float(v))}" for k, v in metrics.items())
                spinner.update(f"estimating with {config.estimator.type}: {what} {done}/{total}  {shown}")

            result = experiment.estimator.estimate(arch, replace(ctx, progress=progress))
    else:
        result = experiment.estimator.estimate(arch, ctx)
    runner.store.close()
    console.print(f"{experiment.space.format(arch)}")
    for key, value in {**result.metrics, **{f"cost.{k}": v for k, v in result.cost.items()}}.items():
        console.print(f"  {key}: {fmt(float(value))}")
    return 0


def add_commands(sub: Any) -> None:
    """The ``train``, ``test``, ``export`` and ``eval-arch`` sub-commands."""
    p = sub.add_parser("train", help="train one arch on the whole training set and test it")
    p.add_argument("--run", help="take the space, data and training settings from this run directory")
    p.add_argument("--config", help="...or from this config file")
    p.add_argument("--arch", help="the arch (its notation or JSON), or a YAML file from derive/topk (default: the run's best)")
    p.add_argument("--index", type=whole_number("--index", 0), default=0, help="which arch of a YAML file (default 0, the best)")
    p.add_argument("--epochs", type=whole_number("--epochs", 1), help="override the number of training epochs (at least 1)")
    p.add_argument(
        "--init-from", metavar="RUN_DIR",
        help="fine-tune from the weights the arch inherits from this one-shot run's supernet "
        "(also the default --run, and its best arch the default --arch)",
    )
    p.add_argument(
        "--out",
        help="model folder to write (default: RUN_DIR/final, RUN_DIR/final-inherited with --init-from; "
        "when taken, the next free name: final-2, final-3, ...). An existing --out is an error without --force",
    )
    p.add_argument("--force", action="store_true", help="replace the model folder if it exists (it is swapped whole)")
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
    p.add_argument("--index", type=whole_number("--index", 0), default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_eval_arch)
