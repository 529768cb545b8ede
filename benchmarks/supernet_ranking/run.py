"""How well does a supernet rank archs? Supernet scores vs accuracy trained from scratch.

A fixed sample of NB201 archs (C=4, N=2 by default) is trained from scratch on a Fashion-MNIST
subset and tested on held-out test images: the ground truth, cached in
``scratch_cache.json`` beside this file so that reruns train only archs (or settings) not seen
before. Then one supernet per rule (SPOS, FairNAS, RSPS) is trained on the same training split
with the supernet estimator and scores every arch on the validation split with inherited
weights. Reported per rule: Kendall's tau and Spearman's rho between supernet score and
scratch test accuracy, and how many of the scratch top 5 the supernet's top 5 holds.

    .venv/bin/python benchmarks/supernet_ranking/run.py           # ~50 min (20 with the cache); writes docs/benchmarks.md
    .venv/bin/python benchmarks/supernet_ranking/run.py --quick   # ~20 s: tiny sizes, no docs, a throw-away cache

Anchor: one-shot supernets reach tau of about 0.5 on NAS-Bench-201 / CIFAR-10.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from nasforge.core import registry
from nasforge.core.estimator import Context
from nasforge.core.seeding import derive_seed
from nasforge.objectives.counters import count_params
from nasforge.reporting import BENCHMARKS_DOC, cpu_model, write_doc_section
from nasforge.runner.checkpoint import atomic_write_bytes
from nasforge.spaces.nb201 import NB201Space
from nasforge.tasks.data import DataSplits
from nasforge.tasks.training import TrainSettings, evaluate, seeded, train_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SECTION = "supernet_ranking"
DATA_DIR = ROOT.parent / "shared" / "data" / "fashion-mnist"


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run."""

    n_archs: int = 50
    train_limit: int = 4000  # training images kept (a quarter become the validation split)
    test_limit: int = 10000  # the whole test set: less noise in the ground truth
    #: Narrow and deep enough for the cells, not the fixed skeleton, to decide the accuracy
    #: (with C=8, N=1 every working cell scored 83-86% on Fashion-MNIST).
    C: int = 4
    N: int = 2
    scratch_epochs: int = 8
    #: Supernet epochs per rule: FairNAS trains 5 paths per step, so 1/5 of the epochs is the same
    #: compute. Fewer are worse: in trial runs SPOS's mean path accuracy was 30% after 10 epochs
    #: (tau -0.15), 72% after 120 (tau -0.03 to 0.2, depending on the supernet's seed).
    supernet_epochs: tuple[tuple[str, int], ...] = (("spos", 120), ("fairnas", 24), ("rsps", 120))
    seed: int = 0


QUICK = Plan(n_archs=8, train_limit=600, test_limit=200, C=4, scratch_epochs=1, supernet_epochs=(("spos", 1), ("fairnas", 1), ("rsps", 1)))


def load_data(plan: Plan) -> DataSplits:
    options = {"data_dir": str(DATA_DIR), "train_limit": plan.train_limit, "test_limit": plan.test_limit, "valid_fraction": 0.25}
    return registry.create("dataset", "fashion_mnist", options).load(seed=plan.seed)


def sample_archs(space: NB201Space, plan: Plan) -> list[str]:
    """``n_archs`` distinct archs drawn uniformly with a fixed seed, in NB201 notation."""
    rng = np.random.default_rng(derive_seed(plan.seed, "ranking-archs"))
    found: list[str] = []
    while len(found) < plan.n_archs:
        text = space.format(space.sample(rng))
        if text not in found:
            found.append(text)
    return found


def scratch_key(plan: Plan, settings: TrainSettings) -> str:
    """What a scratch result depends on (the cache is keyed by it, then by arch)."""
    return json.dumps(
        {"data": [plan.train_limit, plan.test_limit, plan.seed], "space": [plan.C, plan.N], "train": settings.model_dump()},
        sort_keys=True,
    )


def scratch_results(space: NB201Space, data: DataSplits, archs: list[str], plan: Plan, cache_path: Path) -> dict[str, dict[str, float]]:
    """Test accuracy of every arch trained from scratch, from the cache or trained now (and cached)."""
    settings = TrainSettings(epochs=plan.scratch_epochs, batch_size=64, lr=0.05)
    key = scratch_key(plan, settings)
    cache: dict[str, dict[str, dict[str, float]]] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    known = cache.setdefault(key, {})
    for i, text in enumerate(archs):
        if text in known:
            continue
        seed = derive_seed(plan.seed, "scratch", text)
        with seeded(seed):
            model = space.build(space.parse(text))
        report = train_model(model, data.train, settings, seed=seed, eval_set=data.valid)
        test_acc, _ = evaluate(model, data.test)
        known[text] = {"test_acc": test_acc, "valid_acc": float(report.eval_acc or 0.0), "seconds": report.seconds}
        atomic_write_bytes(cache_path, json.dumps(cache, indent=1).encode())
        print(f"scratch {i + 1}/{len(archs)}: {text} test {test_acc:.2f}% ({report.seconds:.0f} s)", flush=True)
    return {text: known[text] for text in archs}


def supernet_scores(space: NB201Space, data: DataSplits, archs: list[str], rule: str, epochs: int, plan: Plan) -> tuple[dict[str, float], float]:
    """The supernet estimator's val_acc of every arch, and the seconds its training took."""
    estimator = registry.create("estimator", "supernet", {"rule": rule, "epochs": epochs}, context={"space": space})
    with tempfile.TemporaryDirectory() as run_dir:
        ctx = Context(space=space, data=data, seed=derive_seed(plan.seed, "supernet", rule), run_dir=Path(run_dir))
        started = time.perf_counter()
        estimator.update(ctx)
        train_seconds = time.perf_counter() - started
        scores = {text: estimator.estimate(space.parse(text), ctx).metrics["val_acc"] for text in archs}
    return scores, train_seconds


def compare(truth: dict[str, float], scores: dict[str, float], k: int = 5) -> dict[str, float]:
    """Kendall's tau-b, Spearman's rho and the top-k overlap of ``scores`` against ``truth``."""
    archs = list(truth)
    x = [scores[a] for a in archs]
    y = [truth[a] for a in archs]
    top = lambda values: set(sorted(archs, key=lambda a: -values[a])[:k])  # noqa: E731
    return {
        "tau": float(stats.kendalltau(x, y).statistic),
        "rho": float(stats.spearmanr(x, y).statistic),
        f"top{k}": float(len(top(scores) & top(truth))),
    }






def report(
    plan: Plan,
    command: str,
    rows: list[dict[str, Any]],
    references: dict[str, dict[str, float]],
    scratch: dict[str, dict[str, float]],
    total: float,
    load: float,
) -> str:
    accs = [r["test_acc"] for r in scratch.values()]
    table = "\n".join(
        f"| {r['rule']} | {r['epochs']} | {r['tau']:.3f} | {r['rho']:.3f} | {r['top5']:.0f}/5 | {r['mean_acc']:.1f} | {r['train_seconds']:.0f} |"
        for r in rows
    )
    table += "\n" + "\n".join(
        f"| *{name}* | | {r['tau']:.3f} | {r['rho']:.3f} | {r['top5']:.0f}/5 | | |" for name, r in references.items()
    )
    best = max(rows, key=lambda r: r["tau"]) if rows else None
    verdict = f"Best rule: {best['rule']} (tau {best['tau']:.2f}; target 0.6)." if best else ""
    return f"""## Supernet ranking quality

`{command}` ({datetime.date.today().isoformat()}; {cpu_model()}, {os.cpu_count()} cores,
{torch.get_num_threads()} torch thread(s), torch {torch.__version__}, Python {platform.python_version()};
load average {load:.1f} at the start (a shared machine); {total / 60:.0f} min in all, scratch training
included unless cached).

{plan.n_archs} NB201 archs (C={plan.C}, N={plan.N}) drawn uniformly with a fixed seed, on Fashion-MNIST
({plan.train_limit} training images: 3/4 train, 1/4 valid; {plan.test_limit} test images). Ground truth: each
arch trained from scratch on the train split for {plan.scratch_epochs} epochs (SGD, lr 0.05 cosine, batch 64),
accuracy on the test images (range {min(accs):.1f}-{max(accs):.1f}%, mean {np.mean(accs):.1f}%; cached in
`benchmarks/supernet_ranking/scratch_cache.json`). Each rule trains one supernet with the supernet
estimator's defaults for that rule but the epochs shown (FairNAS: a fifth of the epochs, as each of
its steps trains 5 paths, so all three train the same number of paths), then scores every arch on
the valid split (SPOS, FairNAS: batch norm recalibrated on 10 training minibatches, whole valid
split; RSPS: training statistics, 10 valid minibatches). Kendall's tau-b and Spearman's rho between
supernet score and scratch test accuracy; top-5: archs shared by both top 5s. Two references, in
italics: the archs' own scratch *validation* accuracy (how far any estimator can agree with this
noisy ground truth) and the parameter count alone. Anchor: one-shot supernets reach tau of about
0.5 on NB201 / CIFAR-10, after some 100,000 supernet steps; here each supernet gets
{plan.supernet_epochs[0][1] if plan.supernet_epochs else 0} epochs of {plan.train_limit * 3 // 4 // 64} steps. {verdict}

| rule | supernet epochs | Kendall tau | Spearman rho | top-5 overlap | mean supernet val acc | supernet training s |
|---|---:|---:|---:|---:|---:|---:|
{table}
"""


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); writes no docs unless --doc")
    parser.add_argument("--archs", type=int, help="number of archs (default 50)")
    parser.add_argument("--rules", default=None, help="comma-separated subset of spos,fairnas,rsps")
    parser.add_argument("--cache", type=Path, help="scratch cache file (default: scratch_cache.json here; --quick: a temporary one)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--doc", type=Path, help="write the report section to this file instead (also with --quick)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else Plan()
    if args.archs:
        plan = dataclasses.replace(plan, n_archs=args.archs)
    if args.rules:
        wanted = args.rules.split(",")
        plan = dataclasses.replace(plan, supernet_epochs=tuple((r, e) for r, e in plan.supernet_epochs if r in wanted))
    started, load = time.perf_counter(), os.getloadavg()[0]
    data = load_data(plan)
    space = NB201Space(C=plan.C, N=plan.N, in_channels=data.in_channels, num_classes=data.num_classes)
    archs = sample_archs(space, plan)
    with tempfile.TemporaryDirectory() as scratch_dir:
        cache = args.cache or (Path(scratch_dir) / "cache.json" if args.quick else HERE / "scratch_cache.json")
        scratch = scratch_results(space, data, archs, plan, cache)
    truth = {text: r["test_acc"] for text, r in scratch.items()}
    references = {
        "scratch valid acc (ceiling)": compare(truth, {text: r["valid_acc"] for text, r in scratch.items()}),
        "parameter count": compare(truth, {text: float(count_params(space.build(space.parse(text)))) for text in archs}),
    }
    print(json.dumps(references), flush=True)
    rows = []
    for rule, epochs in plan.supernet_epochs:
        scores, train_seconds = supernet_scores(space, data, archs, rule, epochs, plan)
        row = {"rule": rule, "epochs": epochs, "train_seconds": train_seconds, "mean_acc": float(np.mean(list(scores.values()))), **compare(truth, scores)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = args.doc or (None if args.quick or args.no_docs else BENCHMARKS_DOC)
    if doc is not None:
        command = " ".join(["benchmarks/supernet_ranking/run.py", *(argv if argv is not None else sys.argv[1:])])
        body = report(plan, command.strip(), rows, references, scratch, time.perf_counter() - started, load)
        write_doc_section(SECTION, body, doc)
    return rows


if __name__ == "__main__":
    main()
