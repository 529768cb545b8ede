"""Once-for-all under a FLOPs budget: which strategy finds the best subnet of one elastic supernet?

One elastic MobileNetV3 supernet (the ``ofa`` space, narrowed for 28x28 inputs) is trained on
Fashion-MNIST by progressive shrinking with sandwich steps and in-place distillation (the
``ofa`` estimator). Then, for three FLOPs budgets (a quarter, a half and three quarters of the
way from the space's cheapest to its dearest arch, by the FLOPs lookup table), each budget
strategy searches the trained supernet: constrained evolution, random search with rejection,
and SGNAS' architecture generator (trained through the supernet, then asked for the budget).
Reported per budget: the FLOPs and supernet validation accuracy of each strategy's arch, and
its test accuracy after a short fine-tune from its inherited weights; the same for random archs
within the budget (supernet accuracy: the mean over ``random_archs``; fine-tuned: the first
``random_finetunes``) and for the MobileNetV2-style arch of the space (kernel 3, expansion 6,
MobileNetV2's depths), which serves as the plain baseline. A table and a plot
(``docs/img/ofa_budget.png``) go into ``docs/benchmarks.md``.

    .venv/bin/python benchmarks/ofa_budget/run.py --threads 2              # CPU plan, about an hour on 2 cores
    .venv/bin/python benchmarks/ofa_budget/run.py --plan gpu --device cuda --data-dir DIR
    .venv/bin/python benchmarks/ofa_budget/run.py --quick                  # ~2 min smoke test, no docs

The supernet's checkpoints live in ``--work-dir`` (default ``runs/ofa_budget-PLAN``): a run
killed during supernet training continues from its last epoch when started again.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared reporting module
from reporting import BENCHMARKS_DOC, machine_summary, write_doc_section

from nasforge.core import registry
from nasforge.core.estimator import Context
from nasforge.core.seeding import derive_seed
from nasforge.estimators.ofa_supernet import OFAEstimator
from nasforge.hardware.lut import CostTable, build_cost_table
from nasforge.oneshot.progressive_shrinking import ShrinkStage
from nasforge.runner.final import initial_model
from nasforge.runner.loop import Budget, Runner
from nasforge.spaces.ofa import OFASpace
from nasforge.tasks.splits import DataSplits
from nasforge.tasks.training import TrainSettings, evaluate, train_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SECTION = "ofa_budget"
PLOT = ROOT / "docs" / "img" / "ofa_budget.png"
DATA_DIR = ROOT.parent / "shared" / "data" / "fashion-mnist"
STRATEGIES = ("constrained_evolution", "rejection_random", "generator")


def _stages(none: int, kernel: int, depth: tuple[int, int], width: tuple[int, int]) -> tuple[ShrinkStage, ...]:
    """OFA's phase order; depth and width in two sub-phases (2 values open, then all), lr as OFA's."""
    return (
        ShrinkStage(elastic="none", epochs=none),
        ShrinkStage(elastic="kernel", epochs=kernel),
        ShrinkStage(elastic="depth", epochs=depth[0], values=2, lr_scale=1 / 12),
        ShrinkStage(elastic="depth", epochs=depth[1], lr_scale=0.25),
        ShrinkStage(elastic="width", epochs=width[0], values=2, lr_scale=1 / 12),
        ShrinkStage(elastic="width", epochs=width[1], lr_scale=0.25),
    )


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run (the CPU plan: about an hour on 2 cores)."""

    train_limit: int | None = 16000  # training images kept; valid_fraction of them score archs
    test_limit: int | None = 10000
    valid_fraction: float = 0.15
    space: dict[str, Any] = field(
        default_factory=lambda: {"small_input": False, "stage_widths": [16, 24, 32, 48, 64], "feature_width": 256}
    )
    stages: tuple[ShrinkStage, ...] = _stages(4, 3, (1, 3), (1, 3))
    lr: float = 0.1
    batch_size: int = 64
    bn_batches: int = 16
    budget_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    evolution_trials: int = 40
    random_trials: int = 40
    generator_epochs: int = 10
    random_archs: int = 10
    random_finetunes: int = 1
    finetune_epochs: int = 2
    finetune_lr: float = 0.01
    seed: int = 0


PLANS = {
    "cpu": Plan(),
    "gpu": Plan(
        train_limit=None,
        test_limit=None,
        valid_fraction=0.1,
        space={"small_input": False, "stage_widths": [24, 40, 80, 112, 160], "feature_width": 1280},
        stages=_stages(12, 8, (2, 8), (2, 8)),
        batch_size=128,
        bn_batches=32,
        evolution_trials=100,
        random_trials=100,
        generator_epochs=30,
        random_archs=30,
        random_finetunes=3,
        finetune_epochs=5,
    ),
    "quick": Plan(
        train_limit=1000,
        test_limit=300,
        valid_fraction=0.2,
        space={"small_input": False, "stem_width": 8, "stage_widths": [8, 8, 16, 16, 16], "feature_width": 32},
        stages=_stages(1, 1, (1, 1), (1, 1)),
        bn_batches=2,
        evolution_trials=4,
        random_trials=4,
        generator_epochs=1,
        random_archs=2,
        finetune_epochs=1,
    ),
}


def load_data(plan: Plan, data_dir: Path) -> DataSplits:
    options = {"data_dir": str(data_dir), "train_limit": plan.train_limit, "test_limit": plan.test_limit}
    options["valid_fraction"] = plan.valid_fraction
    return registry.create("dataset", "fashion_mnist", options).load(seed=plan.seed)


def strategy_options(name: str, plan: Plan, budget: float, data: DataSplits) -> tuple[dict[str, Any], int]:
    """A strategy's options for a FLOPs budget, and the trials it runs."""
    options: dict[str, Any] = {"budget": {"metric": "flops", "max": budget}}
    if name == "constrained_evolution":
        options.update(population_size=max(2, plan.evolution_trials // 4), sample_size=max(1, plan.evolution_trials // 10))
        trials = plan.evolution_trials
    elif name == "rejection_random":
        trials = plan.random_trials
    else:
        options["epochs"] = plan.generator_epochs
        trials = plan.generator_epochs + 1  # the generator asks once per epoch, then once trained
    return options, trials


def search(name: str, plan: Plan, budget: float, space: OFASpace, estimator: OFAEstimator, data: DataSplits, work: Path, device: str) -> dict[str, Any]:
    """One strategy on the trained supernet under ``budget``: its arch (the best feasible one;
    the generator's: the arch it generates once trained) and that arch's supernet metrics."""
    options, trials = strategy_options(name, plan, budget, data)
    strategy = registry.create("strategy", name, options, context=data.context())
    objective = registry.create("objective", "single", {"metric": "val_acc", "constraints": [{"metric": "flops", "max": budget}]})
    run_dir = work / f"{name}-{budget:.0f}"
    shutil.rmtree(run_dir, ignore_errors=True)  # searches are cheap next to the supernet: always fresh
    runner = Runner(space, strategy, estimator, objective, budget=Budget(trials=trials), seed=derive_seed(plan.seed, name, int(budget)), run_dir=run_dir, data=data, device=device)
    started = time.perf_counter()
    try:
        result = runner.run()
    finally:
        runner.store.close()
    done = [t for t in result.trials if t.values]
    chosen = done[-1] if name == "generator" else (result.best(1) or done)[0]
    return {"arch": chosen.arch, "val_acc": chosen.metrics["val_acc"], "flops": chosen.metrics["flops"], "seconds": time.perf_counter() - started}


def finetune(space: OFASpace, arch: Any, data: DataSplits, plan: Plan, supernet_dir: Path, device: str) -> float:
    """Test accuracy after ``finetune_epochs`` on train+valid from the arch's inherited weights."""
    seed = derive_seed(plan.seed, "finetune", space.format(arch))
    model = initial_model(space, arch, seed=seed, init_from=supernet_dir)
    settings = TrainSettings(epochs=plan.finetune_epochs, batch_size=plan.batch_size, lr=plan.finetune_lr, weight_decay=3e-5)
    train_model(model, data.train_and_valid, settings, seed=seed, device=device)
    return evaluate(model, data.test, device=device)[0]


def random_within(space: OFASpace, table: CostTable, budget: float, n: int, seed: int) -> list[Any]:
    """``n`` distinct uniform archs within ``budget`` (rejection sampling on the table)."""
    rng = np.random.default_rng(seed)
    found: list[Any] = []
    while len(found) < n:
        arch = space.sample(rng)
        if table.predict(arch) <= budget and arch not in found:
            found.append(arch)
    return found


def plot(rows: list[dict[str, Any]], budgets: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    markers = {"constrained_evolution": "o", "rejection_random": "s", "generator": "^", "random archs": "x", "MobileNetV2-style": "*"}
    for method, marker in markers.items():
        points = [(r["flops"] / 1e6, r["test_acc"]) for r in rows if r["method"] == method and r["test_acc"] is not None]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, s=60, label=method)
    for budget in budgets:
        ax.axvline(budget / 1e6, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("MFLOPs (28x28 input)")
    ax.set_ylabel("test accuracy after fine-tuning (%)")
    ax.set_title("OFA subnets of one supernet under FLOPs budgets (dotted), Fashion-MNIST")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def outcome(rows: list[dict[str, Any]], generator_epochs: int) -> str:
    """What the table says: how far the archs spread, whether searching beat random, budgets missed."""
    tested = [r["test_acc"] for r in rows if r["test_acc"] is not None]
    searched = [r for r in rows if r["method"] in ("constrained_evolution", "rejection_random")]
    randoms = {r["budget"]: r for r in rows if r["method"] == "random archs"}
    gain = [r["val_acc"] - randoms[r["budget"]]["val_acc"] for r in searched if r["budget"] in randoms]
    generated = [r for r in rows if r["method"] == "generator"]
    missed = sum(r["flops"] > r["budget"] for r in generated)
    said = [
        f"What came out: after fine-tuning every arch lands between {min(tested):.1f}% and {max(tested):.1f}% "
        f"({max(tested) - min(tested):.1f} points apart)"
        + (", so at this size the supernet separates subnets little." if max(tested) - min(tested) < 2 else ".")
    ]
    if gain:
        said.append(
            f"The budgeted searches' archs score {sum(gain) / len(gain):+.1f} points over the random archs of the same "
            "budget on the supernet; after one short fine-tune the test accuracies do not keep that order reliably."
        )
    if generated:
        said.append(
            f"The generator missed {missed} of {len(generated)} budgets (it aims at the budget, it does not enforce it; "
            f"here after {generator_epochs} epochs of generator training)."
            if missed
            else f"The generator met all {len(generated)} budgets."
        )
    return " ".join(said)


def report(plan_name: str, plan: Plan, command: str, rows: list[dict[str, Any]], bounds: tuple[float, float], train_seconds: float, total: float, load: float) -> str:
    def fmt(value: float | None, digits: int = 1) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    table = "\n".join(
        f"| {fmt(r['budget'] / 1e6, 2) if r['budget'] else '-'} | {r['method']} | `{r['arch_text']}` | {fmt(r['flops'] / 1e6, 2)} | "
        f"{fmt(r['val_acc'])} | {fmt(r['test_acc'])} |"
        for r in rows
    )
    epochs = " -> ".join(f"{s.elastic}{'' if s.values is None else f'({s.values})'} {s.epochs}" for s in plan.stages)
    return f"""## Once-for-all under a FLOPs budget

`{command}` ({datetime.date.today().isoformat()}; {machine_summary()}; {torch.get_num_threads()} torch thread(s);
load average {load:.1f} at the start; supernet training {train_seconds / 60:.0f} min, {total / 60:.0f} min in all).

Plan `{plan_name}`: Fashion-MNIST ({plan.train_limit or 'all'} training images, {plan.valid_fraction:.0%} of them the
validation split that scores archs; {plan.test_limit or 'all'} test images). Space `ofa` with {json.dumps(plan.space)}
(FLOPs from {bounds[0] / 1e6:.2f}M to {bounds[1] / 1e6:.2f}M). Supernet: estimator `ofa`, stages (epochs) {epochs},
sandwich of the largest, smallest and 2 random subnets per step with in-place distillation, SGD lr {plan.lr} (times
each stage's scale), batch {plan.batch_size}; batch norm recalibrated on {plan.bn_batches} minibatches before each score.
Budgets at {', '.join(f'{f:.0%}' for f in plan.budget_fractions)} of the FLOPs range. Strategies: `constrained_evolution`
({plan.evolution_trials} trials), `rejection_random` ({plan.random_trials} trials), `generator` ({plan.generator_epochs}
epochs through the supernet, then the arch it generates for the budget; it may miss the budget). Random archs: mean
supernet accuracy of {plan.random_archs} uniform archs within the budget, fine-tuned: the first {plan.random_finetunes}
(mean). Fine-tune: {plan.finetune_epochs} epochs on train+valid from the inherited weights (SGD lr {plan.finetune_lr}),
then the test set once. MobileNetV2-style: kernel 3, expansion 6, MobileNetV2's depths, the same treatment.

| budget MFLOPs | method | arch | MFLOPs | supernet val acc | test acc after fine-tune |
|---:|---|---|---:|---:|---:|
{table}

{outcome(rows, plan.generator_epochs)}

![accuracy vs FLOPs](img/ofa_budget.png)
"""


def run(plan_name: str, plan: Plan, args: argparse.Namespace, argv: list[str] | None, work: Path) -> list[dict[str, Any]]:
    """The benchmark with supernet checkpoints and search runs under ``work``."""
    started, load = time.perf_counter(), os.getloadavg()[0]
    data = load_data(plan, args.data_dir)
    space = OFASpace(**{**plan.space, **data.context()})
    estimator = OFAEstimator(stages=plan.stages, lr=plan.lr, batch_size=plan.batch_size, bn_batches=plan.bn_batches, space=space)
    supernet_dir = work / "supernet-run"
    ctx = Context(space=space, data=data, seed=plan.seed, device=args.device, run_dir=supernet_dir)
    estimator.update(ctx)
    train_seconds = time.perf_counter() - started
    print(f"supernet trained in {train_seconds:.0f} s", flush=True)
    shape = (data.in_channels, *data.input_size)
    table = build_cost_table(space, "flops", shape)
    low, high = table.bounds()
    budgets = [low + f * (high - low) for f in plan.budget_fractions]
    rows: list[dict[str, Any]] = []

    def add(method: str, budget: float | None, archs: list[Any], val_acc: float, test_acc: float | None) -> None:
        text = space.format(archs[0]) if len(archs) == 1 else f"{len(archs)} uniform archs, e.g. {space.format(archs[0])}"
        flops = float(np.mean([table.predict(arch) for arch in archs]))  # exact: the table sums the counters' per-layer FLOPs
        row = {"method": method, "budget": budget, "arch_text": text, "flops": flops, "val_acc": val_acc, "test_acc": test_acc}
        rows.append(row)
        print(json.dumps(row), flush=True)

    baseline = space.named("mobilenet_v2")
    add("MobileNetV2-style", None, [baseline], estimator.estimate(baseline, ctx).metrics["val_acc"], finetune(space, baseline, data, plan, supernet_dir, args.device))
    for i, budget in enumerate(budgets):
        for name in STRATEGIES:
            found = search(name, plan, budget, space, estimator, data, work, args.device)
            add(name, budget, [found["arch"]], found["val_acc"], finetune(space, found["arch"], data, plan, supernet_dir, args.device))
        archs = random_within(space, table, budget, plan.random_archs, derive_seed(plan.seed, "random-archs", i))
        scores = [estimator.estimate(arch, ctx).metrics["val_acc"] for arch in archs]
        tuned = [finetune(space, arch, data, plan, supernet_dir, args.device) for arch in archs[: plan.random_finetunes]]
        add("random archs", budget, archs, float(np.mean(scores)), float(np.mean(tuned)) if tuned else None)
    doc = args.doc or (None if args.quick or args.no_docs else BENCHMARKS_DOC)
    if doc is not None:
        plot(rows, budgets, PLOT if doc == BENCHMARKS_DOC else doc.parent / "img" / PLOT.name)
        command = " ".join(["benchmarks/ofa_budget/run.py", *(argv if argv is not None else sys.argv[1:])])
        body = report(plan_name, plan, command.strip(), rows, (low, high), train_seconds, time.perf_counter() - started, load)
        write_doc_section(SECTION, body, doc)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); writes no docs unless --doc")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="the Fashion-MNIST folder")
    parser.add_argument("--work-dir", type=Path, help="supernet checkpoints and search runs (default runs/ofa_budget-PLAN; --quick: a temporary folder)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--doc", type=Path, help="write the report section to this file instead (also with --quick)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan_name = "quick" if args.quick else args.plan
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work_dir or (Path(scratch) if args.quick else ROOT / "runs" / f"ofa_budget-{plan_name}")
        return run(plan_name, PLANS[plan_name], args, argv, work)

if __name__ == "__main__":
    main()
