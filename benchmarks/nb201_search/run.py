"""Search strategies on NAS-Bench-201, the way NAS papers compare them.

Every registered single-objective strategy searches the NB201 table on the 12-epoch validation
accuracy (the signal NB201's own baselines search on) of CIFAR-10, CIFAR-100 and
ImageNet16-120 for 150 queries, over many seeds; the arch with the best signal after 50, 100
and 150 queries is judged by its 200-epoch test accuracy (mean ± std over seeds). No strategy
is told the budget, so the 50- and 100-query figures are the first 50 and 100 trials of the
150-query runs. Multi-objective strategies search (val_acc max, pixel3 latency min) and are
judged by the hypervolume of their front in (test accuracy, latency). Last, the loop overhead:
regularized evolution on the table through ``run_search`` with the SQLite store in memory and
on disk, in trials per second.

Usage::

    python benchmarks/nb201_search/run.py            # full run (100 seeds), updates docs/benchmarks.md
    python benchmarks/nb201_search/run.py --quick    # a few seeds, to try things; docs untouched
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared reporting module
from reporting import BENCHMARKS_DOC, machine_summary, write_doc_section  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"

IMG = REPO / "docs" / "img"

DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
BUDGETS = (50, 100, 150)
LATENCY = "latency_pixel3"
#: Strategies tagged multi-objective that are also standard single-objective baselines.
ALSO_SINGLE = ("tpe",)
#: Left out: the generic Optuna adapter's default sampler is TPE, which ``tpe`` already runs.
SKIP = ("grid", "optuna")
#: Published and reference figures (CIFAR-10 test accuracy, %), shown next to ours.
NB201_PAPER = {
    "evolution": "93.92 ± 0.30",
    "random": "93.70 ± 0.36",
    "reinforce": "93.85 ± 0.37",
    "BOHB": "93.61 ± 0.52",
}
PLAIN_SEARCH = {  # /shared/data/README.md, "What a plain search reaches" (200 seeds)
    "cifar10": {
        "random": ("93.45 ± 0.57", "93.74 ± 0.36", "93.85 ± 0.27"),
        "evolution": ("93.69 ± 0.71", "94.05 ± 0.40", "94.16 ± 0.28"),
    },
    "cifar100": {"random": ("", "", "71.44 ± 0.96"), "evolution": ("", "", "72.26 ± 0.91")},
    "ImageNet16-120": {"random": ("", "", "45.15 ± 1.07"), "evolution": ("", "", "45.84 ± 0.75")},
}


def _setup_worker() -> None:
    """One thread per process: the pool is the parallelism."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("NASFORGE_DATA_DIR", str(SHARED_DATA))


_ESTIMATORS: dict[tuple[str, bool], Any] = {}


def _estimator(dataset: str, latency: bool) -> Any:
    from nasforge.core import registry

    key = (dataset, latency)
    if key not in _ESTIMATORS:
        options = {"dataset": dataset, "devices": ["pixel3"] if latency else []}
        _ESTIMATORS[key] = registry.create("estimator", "nb201_table", options)
    return _ESTIMATORS[key]


def _search(task: tuple[str, str, str, int, int]) -> tuple[tuple[str, str, str], dict[str, Any]]:
    """One search; returns the best-so-far test accuracy after every query (single objective)
    or the front's hypervolume after each budget (multi-objective)."""
    from nasforge.core import registry
    from nasforge.objectives.basic import Pareto, SingleMetric
    from nasforge.runner import run_search
    from nasforge.spaces.nb201 import NB201Space

    mode, name, dataset, seed, budget = task
    multi = mode == "multi"
    objective = Pareto(metrics={"val_acc": "max", LATENCY: "min"}) if multi else SingleMetric("val_acc")
    space, strategy, estimator = NB201Space(), registry.create("strategy", name, {}), _estimator(dataset, multi)
    started = time.perf_counter()
    result = run_search(space, strategy, estimator, objective, budget=budget, seed=seed)
    seconds = time.perf_counter() - started
    trials = result.trials
    if multi:
        return (mode, name, dataset), {"hv": [_hypervolume(dataset, trials[:b]) for b in BUDGETS], "seconds": seconds}
    best, curve = float("-inf"), []
    for trial in trials:
        if trial.value > best:
            best, best_test = trial.value, trial.metrics["test_acc"]
        curve.append(best_test)
    curve += [curve[-1]] * (budget - len(curve))  # a strategy that stopped early keeps its best
    return (mode, name, dataset), {"curve": curve, "seconds": seconds}


_FRONTS: dict[str, tuple[tuple[float, float], float]] = {}


def _reference(dataset: str) -> tuple[tuple[float, float], float]:
    """Hypervolume reference point (worst test accuracy, worst latency) and the table's best front's volume."""
    if dataset not in _FRONTS:
        from nasforge.core.estimator import Context
        from nasforge.objectives.pareto import hypervolume_2d
        from nasforge.spaces.nb201 import NB201Space

        space, estimator = NB201Space(), _estimator(dataset, True)
        table, ctx = estimator.arrays(), Context(space=space)
        latency = np.array([estimator.estimate(space.parse(a), ctx).metrics[LATENCY] for a in table.archs])
        points = np.column_stack([table.test_acc, -latency])
        reference = (float(table.test_acc.min()), float(-latency.max()))
        _FRONTS[dataset] = (reference, hypervolume_2d(points.tolist(), reference))
    return _FRONTS[dataset]


def _hypervolume(dataset: str, trials: list[Any]) -> float:
    """Share (%) of the table's best (test accuracy, latency) hypervolume that the search's
    front on its own signal (val_acc, latency) covers once judged by test accuracy."""
    from nasforge.objectives.pareto import hypervolume_2d, non_dominated

    reference, best = _reference(dataset)
    ok = [t for t in trials if t.ok]
    front = [ok[i] for i in non_dominated([t.values for t in ok])]
    points = [(t.metrics["test_acc"], -t.metrics[LATENCY]) for t in front]
    return 100.0 * hypervolume_2d(points, reference) / best


def _overhead(trials: int) -> dict[str, float]:
    """Regularized evolution on the NB201 table through run_search: trials per second."""
    from nasforge.core import registry
    from nasforge.objectives.basic import SingleMetric
    from nasforge.runner import run_search
    from nasforge.spaces.nb201 import NB201Space

    rates = {}
    for where in ("memory", "disk"):
        with tempfile.TemporaryDirectory() as folder:
            run_dir = None if where == "memory" else Path(folder) / "run"
            strategy = registry.create("strategy", "evolution", {})
            started = time.perf_counter()
            run_search(
                NB201Space(),
                strategy,
                _estimator("cifar10", False),
                SingleMetric("val_acc"),
                budget=trials,
                seed=0,
                run_dir=run_dir,
            )
            rates[where] = trials / (time.perf_counter() - started)
    return rates


def _strategies() -> tuple[list[str], list[str]]:
    """(single-objective, multi-objective) strategies to run, from the registry."""
    from nasforge.core import registry

    single, multi = [], []
    for reg in registry.registrations("strategy"):
        if reg.name in SKIP or "differentiable" in reg.tags:  # those need a supernet, not a table
            continue
        if "multi-objective" in reg.tags:
            multi.append(reg.name)
        if "multi-objective" not in reg.tags or reg.name in ALSO_SINGLE:
            single.append(reg.name)
    return single, ["random", *multi]  # random search: the multi-objective baseline too


def _fmt(values: list[float] | np.ndarray) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def _single_table(dataset: str, runs: dict[str, list[dict[str, Any]]], optimum: float, oracle: float) -> str:
    header = "| strategy | 50 queries | 100 queries | 150 queries | s / run |"
    if dataset == "cifar10":
        header += " NB201 paper (REA/RS/RL/BOHB) |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    order = sorted(runs, key=lambda n: -np.mean([r["curve"][-1] for r in runs[n]]))
    for name in order:
        curves = np.array([r["curve"] for r in runs[name]])
        cells = [_fmt(curves[:, b - 1]) for b in BUDGETS]
        row = f"| {name} | " + " | ".join(cells) + f" | {np.mean([r['seconds'] for r in runs[name]]):.2f} |"
        if dataset == "cifar10":
            row += f" {NB201_PAPER.get(name, '')} |"
        lines.append(row)
    for name, figures in PLAIN_SEARCH[dataset].items():
        row = f"| *{name}, shared README (200 seeds)* | " + " | ".join(f or "–" for f in figures) + " | |"
        lines.append(row + (" |" if dataset == "cifar10" else ""))
    if dataset == "cifar10":
        lines.append(f"| *BOHB, NB201 paper* | | | | | {NB201_PAPER['BOHB']} |")
    lines.append(
        f"\nOptimum (best 200-epoch test accuracy of any cell): {optimum:.2f}; test accuracy of the cell with "
        f"the best search signal (what a perfect search returns): {oracle:.2f}."
    )
    return "\n".join(lines)


def _multi_table(runs: dict[tuple[str, str], list[dict[str, Any]]], datasets: list[str]) -> str:
    names = sorted({n for n, _ in runs})
    header = "| strategy | " + " | ".join(f"{d} HV % at 50 / 100 / 150" for d in datasets) + " | s / run |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name in names:
        cells = []
        for dataset in datasets:
            hv = np.array([r["hv"] for r in runs.get((name, dataset), [])])
            cells.append(" / ".join(f"{hv[:, i].mean():.1f}" for i in range(len(BUDGETS))) if len(hv) else "–")
        seconds = np.mean([r["seconds"] for d in datasets for r in runs.get((name, d), [])])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {seconds:.2f} |")
    return "\n".join(lines)


def _plot(dataset: str, runs: dict[str, list[dict[str, Any]]], optimum: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in sorted(runs):
        regret = optimum - np.array([r["curve"] for r in runs[name]])
        ax.plot(np.arange(1, regret.shape[1] + 1), regret.mean(axis=0), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("queries")
    ax.set_ylabel("regret of 200-epoch test accuracy (%)")
    ax.set_title(f"NAS-Bench-201 {dataset}: mean over {len(next(iter(runs.values())))} seeds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)






def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="seeds per strategy and dataset (default 100)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5 seeds, 2,000-trial overhead runs; docs/ left alone, plots in a temp folder",
    )
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--strategies", nargs="*", help="only these strategies (default: every registered one)")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    parser.add_argument(
        "--mo-datasets", nargs="*", default=["cifar10"], choices=DATASETS, help="datasets of the multi-objective runs"
    )
    parser.add_argument("--overhead-trials", type=int, default=20_000, help="trials of each overhead run")
    args = parser.parse_args(argv)
    seeds = 5 if args.quick else args.seeds
    overhead_trials = 2_000 if args.quick else args.overhead_trials
    _setup_worker()
    single, multi = _strategies()
    if args.strategies:
        single = [s for s in single if s in args.strategies]
        multi = [s for s in multi if s in args.strategies]

    tasks = [("single", n, d, s, BUDGETS[-1]) for n in single for d in args.datasets for s in range(seeds)]
    tasks += [("multi", n, d, s, BUDGETS[-1]) for n in multi for d in args.mo_datasets for s in range(seeds)]
    print(f"{len(tasks)} searches: single-objective {single}, multi-objective {multi}, {seeds} seeds", flush=True)
    started = time.perf_counter()
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    with mp.get_context("spawn").Pool(args.processes, initializer=_setup_worker) as pool:
        for i, (key, result) in enumerate(pool.imap_unordered(_search, tasks, chunksize=4), 1):
            results[key].append(result)
            if i % 100 == 0 or i == len(tasks):
                print(f"  {i}/{len(tasks)} searches, {time.perf_counter() - started:.0f} s", flush=True)
    search_seconds = time.perf_counter() - started
    rates = _overhead(overhead_trials)

    from nasforge.estimators.tabular_nb201 import nb201_table

    images = Path(tempfile.mkdtemp(prefix="nb201_search_")) if args.quick else IMG

    parts = [
        "## NAS-Bench-201: search strategies\n",
        "Command: `python benchmarks/nb201_search/run.py`  ",
        f"Machine: {machine_summary()}  ",
        f"Date: {dt.date.today().isoformat()}; {len(tasks)} searches in {search_seconds / 60:.1f} min "
        f"on {args.processes} worker processes (the machine was shared, so `s / run` is indicative).\n",
        "Each strategy, at its default options, searches the NB201 table through `run_search` on the 12-epoch "
        "validation accuracy (`nb201_table`'s `val_acc`); the cell with the best signal is judged by its 200-epoch "
        f"test accuracy, mean ± std over {seeds} seeds (seeds 0..{seeds - 1}). No strategy is told the budget, so "
        "the 50- and 100-query columns are the first 50 and 100 trials of the 150-query runs. `s / run` is the "
        "wall time of one 150-query search, table look-ups included. Left out: grid search (it enumerates the "
        "space in a fixed order), differentiable strategies (they need a supernet, not a table) and the generic "
        "`optuna` adapter (its default sampler is `tpe`'s). Of the strategies tagged `multi-objective`, TPE is also "
        "a single-objective baseline and is listed. Reference rows in italics are not ours: the NB201 paper's (Dong & Yang 2020, "
        "single-seed 12-epoch signal, so noisier) and the shared data README's plain search (same signal as here).\n",
    ]
    for dataset in args.datasets:
        runs = {n: results[("single", n, dataset)] for n in single if results[("single", n, dataset)]}
        if not runs:
            continue
        table = nb201_table(dataset)  # type: ignore[arg-type]
        image = images / f"nb201_search_regret_{dataset}.png"
        _plot(dataset, runs, table.best_test_acc, image)
        link = image.relative_to(BENCHMARKS_DOC.parent).as_posix() if image.is_relative_to(BENCHMARKS_DOC.parent) else str(image)
        parts += [
            f"### {dataset}\n",
            _single_table(dataset, runs, table.best_test_acc, table.oracle_test_acc),
            f"\n![regret, {dataset}]({link})\n",
        ]
    multi_runs = {(n, d): results[("multi", n, d)] for n in multi for d in args.mo_datasets if results[("multi", n, d)]}
    if multi_runs:
        parts += [
            "### Multi-objective: accuracy and Pixel 3 latency\n",
            "Objective (val_acc max, latency_pixel3 min), 150 queries, on "
            + ", ".join(args.mo_datasets)
            + ". The front a search finds on its own signal "
            "is judged in (200-epoch test accuracy, latency): its hypervolume as a share of the hypervolume of the "
            "whole table's best front, reference point (worst test accuracy, worst latency of the table), mean over "
            f"{seeds} seeds. Random search is the baseline.\n",
            _multi_table(multi_runs, args.mo_datasets),
            "",
        ]
    parts += [
        "### Loop overhead\n",
        f"Regularized evolution on the NB201 table through `run_search`, {overhead_trials:,} trials, one process: "
        f"**{rates['memory']:,.0f} trials/s** with the SQLite store in memory, **{rates['disk']:,.0f} trials/s** "
        "with it on disk (a run directory, with checkpoints). Target: 2,000 trials/s.",
    ]
    section = "\n".join(parts)
    print(section)
    if not args.quick:
        write_doc_section("nb201_search", section)
        print(f"\nupdated {BENCHMARKS_DOC}")


if __name__ == "__main__":
    main()
