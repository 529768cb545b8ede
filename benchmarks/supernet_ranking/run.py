"""How well does a supernet rank archs? Supernet scores vs accuracy trained from scratch.

A fixed sample of NB201 archs is trained from scratch on Fashion-MNIST and tested on held-out
test images: the ground truth. Then one supernet per rule (SPOS, FairNAS, RSPS) is trained on
the same training split with the supernet estimator and scores every arch on the validation
split with inherited weights. Reported per rule: Kendall's tau and Spearman's rho between
supernet score and scratch test accuracy, and how many of the scratch top 5 the supernet's top 5
holds. Anchor: one-shot supernets reach tau of about 0.5 on NAS-Bench-201 / CIFAR-10.

Plans (``--plan``) fix the sizes: ``cpu`` (the default, about an hour on 2 cores), ``gpu`` (the
whole training set, wider networks, longer training: for one CUDA GPU with ``--device cuda``),
``quick`` (a smoke test of seconds). Scratch training runs ``--workers`` archs at once, each
in its own process with one torch thread (on a GPU they share the device).

Every result is cached as it comes, so the work splits across calls and a killed run loses at
most one arch or one supernet epoch: scratch results in ``scratch_cache.json``, supernet scores
in ``supernet_cache.json`` (both beside this file, or beside ``--cache``), each record with the
machine that produced it; supernet checkpoints in ``runs/supernet_ranking/`` (resumed). A
call with ``--stage scratch`` trains only the ground truth; ``--rules`` picks supernets;
``--cached-only`` refuses to compute anything (to write the report from cached results).

    .venv/bin/python benchmarks/supernet_ranking/run.py           # plan cpu, ~60 min; writes docs/benchmarks.md
    .venv/bin/python benchmarks/supernet_ranking/run.py --quick   # ~30 s: tiny sizes, no docs, throw-away caches
    python3 benchmarks/supernet_ranking/run.py --plan gpu --device cuda --workers 8 --stage scratch
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.atomic import atomic_write_bytes
from nasforge.core.errors import ConfigError
from nasforge.core.estimator import Context
from nasforge.core.seeding import derive_seed, seeded
from nasforge.nn.counters import count_params
from nasforge.oneshot.rules import get_rule
from nasforge.spaces.nb201 import NB201_EDGES, NB201Space
from nasforge.tasks.splits import DataSplits
from nasforge.tasks.training import TrainSettings, evaluate, train_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared reporting module
from reporting import BENCHMARKS_DOC, machine_summary, write_doc_section  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SECTION = "supernet_ranking"
DATA_DIR = ROOT.parent / "shared" / "data" / "fashion-mnist"
#: Supernet checkpoints, one folder per plan, rule and settings (``runs/`` is not tracked).
WORK_DIR = ROOT / "runs" / "supernet_ranking"
RULES = ("spos", "fairnas", "rsps")


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run.

    ``supernet_epochs`` pairs each rule with its epochs (FairNAS trains 5 paths per step, so
    1/5 of SPOS's epochs is the same compute); every other supernet setting is the rule's
    default, except the batch size when ``supernet_batch_size`` is set, and then the rule's
    learning rate is scaled by the square root of the batch-size ratio.
    """

    name: str = "cpu"
    n_archs: int = 50
    train_limit: int | None = 4000  # training images kept (valid_fraction of them become the valid split)
    valid_fraction: float = 0.25
    test_limit: int | None = 10000  # the whole test set: less noise in the ground truth
    #: Narrow and deep enough for the cells, not the fixed skeleton, to decide the accuracy
    #: (with C=8, N=1 every working cell scored 83-86% on 3,000 Fashion-MNIST images).
    C: int = 4
    N: int = 2
    scratch_epochs: int = 8
    scratch_batch_size: int = 64
    scratch_lr: float = 0.05
    #: In trial runs SPOS's mean path accuracy was 30% after 10 epochs (tau -0.15), 72% after
    #: 120 (tau -0.03 to 0.2, depending on the supernet's seed). Scoring does not rescue it: after
    #: 60 epochs tau was -0.13 by val acc, -0.01 by val loss, -0.19 on canonical forms, and 50
    #: recalibration batches or train-mode BN changed it by under 0.02; it favours cells with a
    #: skip from input to output and under-rates deep conv chains (too little training).
    supernet_epochs: tuple[tuple[str, int], ...] = (("spos", 120), ("fairnas", 24), ("rsps", 120))
    supernet_batch_size: int | None = None
    seed: int = 0


PLANS: dict[str, Plan] = {
    "cpu": Plan(),
    #: For one GPU: all 60,000 training images (54,000 train, 6,000 valid), NB201's own scratch
    #: recipe (batch 256, lr 0.1 cosine) for 15 epochs at C=8, and supernets that see 150x the
    #: samples the cpu plan's see (batch 256, so SPOS's lr 0.05 becomes 0.1, RSPS's 0.025 0.05).
    "gpu": Plan(
        name="gpu",
        train_limit=None,
        valid_fraction=0.1,
        C=8,
        N=2,
        scratch_epochs=15,
        scratch_batch_size=256,
        scratch_lr=0.1,
        supernet_epochs=(("spos", 100), ("fairnas", 20), ("rsps", 100)),
        supernet_batch_size=256,
    ),
    "quick": Plan(
        name="quick",
        n_archs=8,
        train_limit=600,
        test_limit=200,
        scratch_epochs=1,
        supernet_epochs=(("spos", 1), ("fairnas", 1), ("rsps", 1)),
    ),
}


# -- data, archs, the JSON caches ----------------------------------------------------------------


def load_data(plan: Plan, data_dir: Path = DATA_DIR) -> DataSplits:
    """The plan's Fashion-MNIST splits (the valid split drawn with the plan's seed)."""
    options = {
        "data_dir": str(data_dir),
        "train_limit": plan.train_limit,
        "test_limit": plan.test_limit,
        "valid_fraction": plan.valid_fraction,
    }
    return registry.create("dataset", "fashion_mnist", options).load(seed=plan.seed)


def make_space(plan: Plan, data: DataSplits) -> NB201Space:
    return NB201Space(C=plan.C, N=plan.N, in_channels=data.in_channels, num_classes=data.num_classes)


def sample_archs(space: NB201Space, plan: Plan) -> list[str]:
    """``n_archs`` distinct archs drawn uniformly with a fixed seed, in NB201 notation."""
    rng = np.random.default_rng(derive_seed(plan.seed, "ranking-archs"))
    found: list[str] = []
    while len(found) < plan.n_archs:
        text = space.format(space.sample(rng))
        if text not in found:
            found.append(text)
    return found


def canonical_nb201(space: NB201Space, text: str) -> str:
    """The representative of ``text``'s class of equivalent NB201 cells (de-isomorphism).

    Ning et al. 2021 ("Evaluating Efficient Performance Estimators of Neural Architectures")
    score each arch by one canonical member of its isomorphism class. Here: every edge that
    cannot reach the output (its input node gets nothing from the cell input, or its output
    node leads nowhere) becomes ``none``; then, when no edge joins nodes 1 and 2, the two are
    interchangeable and the labelling that reads first in edge order is kept.
    """
    arch = space.parse(text)
    ops = {name: str(arch[name]) for name in NB201_EDGES}
    ends = {name: (int(name[0]), int(name[-1])) for name in NB201_EDGES}
    fed = {0}  # nodes receiving something from the cell input
    for node in (1, 2, 3):
        if any(ops[name] != "none" and j in fed for name, (i, j) in ends.items() if i == node):
            fed.add(node)
    feeding = {3}  # nodes whose value reaches the output
    for node in (2, 1, 0):
        if any(ops[name] != "none" and i in feeding for name, (i, j) in ends.items() if j == node):
            feeding.add(node)
    ops = {name: op if (j in fed and i in feeding) else "none" for name, op in ops.items() for i, j in [ends[name]]}
    if ops["2<-1"] == "none":
        swapped = {**ops, "1<-0": ops["2<-0"], "2<-0": ops["1<-0"], "3<-1": ops["3<-2"], "3<-2": ops["3<-1"]}
        ops = min(ops, swapped, key=lambda o: [o[name] for name in NB201_EDGES])
    return space.format(Arch(ops))


class JsonCache:
    """A JSON file of ``{key: {name: record}}``, rewritten atomically after every new record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.content: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}

    def section(self, key: str) -> dict[str, Any]:
        return self.content.setdefault(key, {})

    def save(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.content, indent=1).encode())


def _data_key(plan: Plan) -> list[Any]:
    return [plan.train_limit, plan.valid_fraction, plan.test_limit, plan.seed]


# -- the ground truth: every arch trained from scratch ---------------------------------------------


def scratch_settings(plan: Plan) -> TrainSettings:
    return TrainSettings(epochs=plan.scratch_epochs, batch_size=plan.scratch_batch_size, lr=plan.scratch_lr)


#: The training settings every scratch key names; any other setting is named only when it is
#: not its default, so that options added to TrainSettings later leave the cache valid.
_RECIPE = ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "grad_clip", "label_smoothing", "warmup_epochs")


def scratch_key(plan: Plan) -> str:
    """What a scratch result depends on (the cache is keyed by it, then by arch)."""
    settings, defaults = scratch_settings(plan).model_dump(), TrainSettings().model_dump()
    train = {name: value for name, value in settings.items() if name in _RECIPE or value != defaults[name]}
    return json.dumps({"data": _data_key(plan), "space": [plan.C, plan.N], "train": train}, sort_keys=True)


#: What a scratch-training process works with, set once per process by :func:`_init_worker`.
_WORKER: dict[str, Any] = {}


def _init_worker(plan: Plan, data_dir: Path, device: str, data: DataSplits | None = None) -> None:
    """Load the data and the space once per worker process (or take the caller's data in-process)."""
    if data is None:  # a worker process of the pool: one torch thread, its own copy of the data
        torch.set_num_threads(1)
        data = load_data(plan, data_dir)
    _WORKER.update(plan=plan, data=data, space=make_space(plan, data), device=device, machine=machine_summary(device))


def _train_from_scratch(text: str) -> tuple[str, dict[str, Any]]:
    """Train one arch from scratch (in the process :func:`_init_worker` set up) and test it."""
    plan, data, space, device = _WORKER["plan"], _WORKER["data"], _WORKER["space"], _WORKER["device"]
    seed = derive_seed(plan.seed, "scratch", text)
    with seeded(seed):
        model = space.build(space.parse(text))
    report = train_model(model, data.train, scratch_settings(plan), seed=seed, device=device, eval_set=data.valid)
    test_acc, _ = evaluate(model, data.test, device=device)
    record = {"test_acc": test_acc, "valid_acc": float(report.eval_acc or 0.0), "seconds": report.seconds, "machine": _WORKER["machine"]}
    return text, record


def _pool_context(device: str) -> multiprocessing.context.BaseContext:
    # CUDA cannot be used in a forked child; on the CPU fork is faster and needs no importable module
    return multiprocessing.get_context("spawn" if torch.device(device).type == "cuda" else "fork")


def _scratch_runs(
    todo: list[str], plan: Plan, data: DataSplits, data_dir: Path, device: str, workers: int, deadline: float
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(arch, record)`` for the archs of ``todo`` in the order they finish; none starts after
    ``deadline`` (a ``time.monotonic()`` value), so some may be left for another call."""
    if workers <= 1:
        _init_worker(plan, data_dir, device, data)
        for text in todo:
            if time.monotonic() > deadline:
                return
            yield _train_from_scratch(text)
        return
    waiting = iter(todo)
    context = _pool_context(device)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(plan, data_dir, device)) as pool:
        running = {pool.submit(_train_from_scratch, text) for text in itertools.islice(waiting, workers)}
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
                if time.monotonic() <= deadline:
                    running |= {pool.submit(_train_from_scratch, text) for text in itertools.islice(waiting, 1)}


def scratch_results(
    plan: Plan,
    data: DataSplits,
    archs: list[str],
    cache_path: Path,
    *,
    data_dir: Path = DATA_DIR,
    device: str = "cpu",
    workers: int = 1,
    cached_only: bool = False,
    deadline: float = float("inf"),
) -> dict[str, dict[str, Any]]:
    """Test accuracy of the archs trained from scratch, from the cache or trained now (and cached).

    Archs not started by ``deadline`` (``time.monotonic()``) are missing from the answer.
    """
    cache = JsonCache(cache_path)
    known = cache.section(scratch_key(plan))
    todo = [text for text in archs if text not in known]
    if todo and cached_only:
        raise ConfigError(f"--cached-only: {len(todo)} of {len(archs)} scratch results are not in {cache_path}")
    for done, (text, record) in enumerate(_scratch_runs(todo, plan, data, data_dir, device, workers, deadline), start=1):
        known[text] = record
        cache.save()
        print(f"scratch {done}/{len(todo)}: {text} test {record['test_acc']:.2f}% ({record['seconds']:.0f} s)", flush=True)
    return {text: known[text] for text in archs if text in known}


# -- supernet scores -------------------------------------------------------------------------------


def supernet_options(plan: Plan, rule: str, epochs: int) -> dict[str, Any]:
    """The supernet estimator's options for ``rule`` under ``plan``."""
    options: dict[str, Any] = {"rule": rule, "epochs": epochs}
    if plan.supernet_batch_size is not None:
        defaults = type(get_rule(rule)).defaults
        scale = (plan.supernet_batch_size / defaults.batch_size) ** 0.5
        options.update(batch_size=plan.supernet_batch_size, lr=round(defaults.lr * scale, 6))
    return options


def supernet_key(plan: Plan, options: dict[str, Any]) -> str:
    """What a supernet's scores depend on: the data, the space and the estimator options."""
    return json.dumps({"data": _data_key(plan), "space": [plan.C, plan.N], "estimator": options}, sort_keys=True)


def supernet_scores(
    space: NB201Space,
    data: DataSplits,
    archs: list[str],
    plan: Plan,
    rule: str,
    epochs: int,
    cache_path: Path,
    work_dir: Path,
    *,
    device: str = "cpu",
    cached_only: bool = False,
) -> dict[str, Any]:
    """The supernet estimator's val_acc and val_loss of every arch and of its canonical form
    (:func:`canonical_nb201`), and the supernet's training seconds.

    Cached per plan and estimator options; the supernet's checkpoints live in ``work_dir`` so
    that a killed run resumes its training, and archs added later are scored without retraining.
    """
    options = supernet_options(plan, rule, epochs)
    key = supernet_key(plan, options)
    cache = JsonCache(cache_path)
    record = cache.section(key)
    wanted = dict.fromkeys([*archs, *(canonical_nb201(space, text) for text in archs)])
    todo = [text for text in wanted if text not in record.get("val_acc", {})]
    if todo and cached_only:
        raise ConfigError(f"--cached-only: the {rule} supernet has not scored {len(todo)} of the archs in {cache_path}")
    if todo:
        run_dir = work_dir / f"{plan.name}-{rule}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        estimator = registry.create("estimator", "supernet", options, context={"space": space})
        ctx = Context(space=space, data=data, seed=derive_seed(plan.seed, "supernet", rule), device=device, run_dir=run_dir)
        started = time.perf_counter()
        estimator.update(ctx)
        if "train_seconds" not in record:  # seconds of the call that trained it (a resumed run: its last part)
            record["train_seconds"] = time.perf_counter() - started
            record["machine"] = machine_summary(device)
        for text in todo:
            metrics = estimator.estimate(space.parse(text), ctx).metrics
            record.setdefault("val_acc", {})[text] = metrics["val_acc"]
            record.setdefault("val_loss", {})[text] = metrics["val_loss"]
        cache.save()
    return record


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


# -- the report ------------------------------------------------------------------------------------


def report(
    plan: Plan,
    command: str,
    rows: list[dict[str, Any]],
    references: dict[str, dict[str, float]],
    scratch: dict[str, dict[str, Any]],
    load: float,
) -> str:
    accs = [r["test_acc"] for r in scratch.values()]
    settings = scratch_settings(plan)
    table = "\n".join(
        f"| {r['rule']} | {r['epochs']} | {r['tau']:.3f} | {r['rho']:.3f} | {r['top5']:.0f}/5 | {r['tau_loss']:.3f} | {r['tau_canonical']:.3f} "
        f"| {r.get('tau_convs', float('nan')):.3f} | {r['mean_acc']:.1f} | {r['train_seconds']:.0f} |"
        for r in rows
    )
    table += "\n" + "\n".join(
        f"| *{name}* | | {r['tau']:.3f} | {r['rho']:.3f} | {r['top5']:.0f}/5 | | | | | |" for name, r in references.items()
    )
    best = max(rows, key=lambda r: r["tau"]) if rows else None
    verdict = ""
    if best:
        met = "met" if best["tau"] >= 0.6 else "not met"
        verdict = f"Best rule: {best['rule']} (tau {best['tau']:.2f}; target 0.6: {met})."
    machines = sorted({r["machine"] for r in scratch.values() if "machine" in r})
    scratch_machine = "; ".join(machines) if machines else "not recorded (before machines were)"
    supernet_machines = "; ".join(sorted({r["machine"] for r in rows})) or "none"
    train_images = "all 60,000" if plan.train_limit is None else f"{plan.train_limit}"
    resized = f" (batch {plan.supernet_batch_size}, learning rate scaled by the square root of the batch ratio)" if plan.supernet_batch_size else ""
    return f"""## Supernet ranking quality

`{command}` ({datetime.date.today().isoformat()}; plan `{plan.name}`; load average {load:.1f} at the start).
Scratch training ran on: {scratch_machine}. Supernets ran on: {supernet_machines}
({torch.get_num_threads()} torch thread(s) in the main process; scratch workers 1 thread each).

{plan.n_archs} NB201 archs (C={plan.C}, N={plan.N}) drawn uniformly with a fixed seed, on Fashion-MNIST
({train_images} training images: {1 - plan.valid_fraction:g} train, {plan.valid_fraction:g} valid; {plan.test_limit or 10000} test images).
Ground truth: each arch trained from scratch on the train split for {plan.scratch_epochs} epochs (SGD, lr
{settings.lr} cosine, batch {settings.batch_size}), accuracy on the test images (range {min(accs):.1f}-{max(accs):.1f}%,
mean {np.mean(accs):.1f}%, std {np.std(accs):.1f}; cached in `benchmarks/supernet_ranking/scratch_cache.json`).
Each rule trains one supernet with the supernet estimator's defaults for that rule{resized} but
the epochs shown (FairNAS: a fifth of the epochs, as each of its steps trains 5 paths, so all three
train the same number of paths), then scores every arch on the valid split (SPOS, FairNAS: batch
norm recalibrated on training minibatches, whole valid split; RSPS: training statistics, 10 valid
minibatches). Kendall's tau-b and Spearman's rho between supernet score and scratch test accuracy;
top-5: archs shared by both top 5s. Two more Kendall taus of the same supernet: scored by
validation loss (lower is better) instead of accuracy, and scored on each arch's canonical form
(edges that cannot reach the output set to none, nodes 1 and 2 in one order when
interchangeable: the de-isomorphism of Ning et al. 2021). "tau with #convs": Kendall's tau between the
supernet's score and the number of convolutions in the cell, what the supernet rewards (the ground truth's
own tau with it is the reference row). References, in italics: the archs' own scratch *validation*
accuracy (how far any estimator can agree with this noisy ground truth), the parameter count
alone and the number of convolutions alone. Anchor: one-shot supernets reach tau of about 0.5 on NB201 / CIFAR-10, after some 100,000
supernet steps. {verdict}

| rule | supernet epochs | Kendall tau | Spearman rho | top-5 overlap | tau, by val loss | tau, canonical form | tau with #convs | mean supernet val acc | supernet training s |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{table}
"""


# -- the command -----------------------------------------------------------------------------------


def pick_plan(args: argparse.Namespace) -> Plan:
    plan = PLANS["quick" if args.quick else args.plan]
    if args.archs:
        plan = dataclasses.replace(plan, n_archs=args.archs)
    if args.rules:
        wanted = args.rules.split(",")
        unknown = [rule for rule in wanted if rule not in RULES]
        if unknown:
            raise ConfigError(f"--rules: unknown rule(s) {', '.join(unknown)}; allowed: {', '.join(RULES)}")
        plan = dataclasses.replace(plan, supernet_epochs=tuple((r, e) for r, e in plan.supernet_epochs if r in wanted))
    return plan


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", choices=sorted(PLANS), default="cpu", help="sizes of the run (default cpu)")
    parser.add_argument("--quick", action="store_true", help="plan quick (a smoke test); writes no docs unless --doc")
    parser.add_argument("--archs", type=int, help="number of archs (default: the plan's)")
    parser.add_argument("--rules", default=None, help="comma-separated subset of spos,fairnas,rsps")
    parser.add_argument("--stage", choices=("all", "scratch"), default="all", help="scratch: train the ground truth only")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, default=1, help="archs trained from scratch at once, one process each")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help=f"Fashion-MNIST IDX files (default {DATA_DIR})")
    parser.add_argument("--cache", type=Path, help="scratch cache file; supernet_cache.json goes beside it (default: here; --quick: temporary)")
    parser.add_argument("--budget-s", type=float, help="start no scratch training after this many seconds (the rest: another call)")
    parser.add_argument("--cached-only", action="store_true", help="compute nothing: fail unless every result is cached")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process (supernets, workers=1)")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--doc", type=Path, help="write the report section to this file instead (also with --quick)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here (torch {torch.__version__})")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = pick_plan(args)
    load = os.getloadavg()[0]
    data = load_data(plan, args.data_dir)
    space = make_space(plan, data)
    archs = sample_archs(space, plan)
    with tempfile.TemporaryDirectory() as temporary:
        cache = args.cache or (Path(temporary) / "scratch_cache.json" if args.quick else HERE / "scratch_cache.json")
        work_dir = Path(temporary) if args.quick else WORK_DIR
        scratch = scratch_results(
            plan, data, archs, cache, data_dir=args.data_dir, device=args.device, workers=args.workers,
            cached_only=args.cached_only, deadline=time.monotonic() + (float("inf") if args.budget_s is None else args.budget_s),
        )
        if len(scratch) < len(archs):
            print(f"{len(archs) - len(scratch)} of {len(archs)} archs still to train from scratch: run again", flush=True)
            return []
        if args.stage == "scratch":
            return []
        truth = {text: r["test_acc"] for text, r in scratch.items()}
        references = {
            "scratch valid acc (ceiling)": compare(truth, {text: r["valid_acc"] for text, r in scratch.items()}),
            "parameter count": compare(truth, {text: float(count_params(space.build(space.parse(text)))) for text in archs}),
            "number of convs in the cell": compare(truth, {text: float(text.count("conv")) for text in archs}),
        }
        print(json.dumps(references), flush=True)
        rows = []
        for rule, epochs in plan.supernet_epochs:
            record = supernet_scores(
                space, data, archs, plan, rule, epochs, cache.with_name("supernet_cache.json"), work_dir,
                device=args.device, cached_only=args.cached_only,
            )
            scores = {text: record["val_acc"][text] for text in archs}
            row = {
                "rule": rule,
                "epochs": epochs,
                "train_seconds": record["train_seconds"],
                "machine": record["machine"],
                "mean_acc": float(np.mean(list(scores.values()))),
                **compare(truth, scores),
                # the same supernet scored two other ways: by validation loss, and on each arch's canonical form
                "tau_loss": compare(truth, {text: -record["val_loss"][text] for text in archs})["tau"],
                "tau_canonical": compare(truth, {text: record["val_acc"][canonical_nb201(space, text)] for text in archs})["tau"],
                # what the supernet rewards: a negative tau with the conv count is the bias to shallow cells
                "tau_convs": float(stats.kendalltau([scores[t] for t in archs], [t.count("conv") for t in archs])[0]),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    doc = args.doc or (None if args.quick or args.no_docs else BENCHMARKS_DOC)
    if doc is not None:
        command = " ".join(["benchmarks/supernet_ranking/run.py", *(argv if argv is not None else sys.argv[1:])])
        write_doc_section(SECTION, report(plan, command.strip(), rows, references, scratch, load), doc)
    return rows


if __name__ == "__main__":
    main()
