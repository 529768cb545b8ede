"""Latency cost models on this machine: a ProxylessNAS space profiled, then children measured.

The space is ProxylessNAS (21 searched layers of MBConv k3/5/7 e3/6 or zero) in its small-input
variant on 3x32x32 inputs, 10 classes: a child runs in a few milliseconds on one CPU core.

1. ``nasforge profile``'s :func:`~nasforge.hardware.profile.profile_space` measures every distinct
   block (the latency table; threads pinned, warm-up, median of repeats).
2. 2,000 distinct sampled children (fit) and 1,000 more (test) are measured end to end with
   :func:`~nasforge.hardware.profile.measure_model`, in one shuffled order so that drift of the
   machine hits both sets alike.
3. Every cost model of :mod:`nasforge.hardware.costmodels` is fitted on the fit children (block
   features from the table) and judged on the test children: rMSE, Spearman rho, share within
   ±10%; also the table itself (sum of blocks plus its calibrated overhead).

Measurements are cached in ``measurements_<device>.json`` beside this file (saved as they come,
so an interrupted run continues where it stopped; a cache made with other settings is refused).
Reruns re-fit without measuring. Anchors: aw_nas's cost models reach ~3.6x lower rMSE than the
naive sum (GPU); nn-Meter predicts 99.0% of a phone CPU's latencies within ±10%. Targets here:
rMSE naive / best >= 3.6, best model within ±10% >= 95%.

    .venv/bin/python benchmarks/latency_cpu/run.py                 # ~13 min on an idle machine; writes docs/benchmarks.md
    .venv/bin/python benchmarks/latency_cpu/run.py --quick         # 60 + 30 children, ~1 min, files in /tmp, no docs
    .venv/bin/python benchmarks/latency_cpu/run.py --device cuda   # the same on a GPU (synchronised timing)

The cache holds everything the report needs: measure on one machine (``--cache FILE``), copy the
file here as ``measurements_<device>.json`` and rerun on any other to fit and write the report.

Measure on an otherwise idle machine: other jobs on the cores are noise in every figure.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasforge.core import registry
from nasforge.core.arch import Arch
from nasforge.core.atomic import atomic_write_bytes
from nasforge.core.errors import ConfigError
from nasforge.hardware.costmodels import evaluate, make_cost_model
from nasforge.hardware.fitting import distinct_archs, table_features
from nasforge.hardware.profile import LatencyTable, measure_model, profile_space
from nasforge.spaces.mobilenet_spaces import ProxylessSpace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared reporting module
from reporting import machine_summary, write_doc_section  # noqa: E402

HERE = Path(__file__).resolve().parent
INPUT_SHAPE = (1, 3, 32, 32)
SAVE_EVERY = 25  # children measured between cache writes
TARGET_RATIO, TARGET_WITHIN = 3.6, 0.95


def make_space() -> ProxylessSpace:
    """ProxylessNAS, small-input variant (stem and first downsampling at stride 1), 32x32, 10 classes."""
    return ProxylessSpace(in_channels=3, num_classes=10, input_size=INPUT_SHAPE[2:], small_input=True)


class Cache:
    """The measurements of one setting: the latency table and each child's latency (ms)."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.settings = settings
        self.table: LatencyTable | None = None
        self.children: dict[str, float] = {}
        if path.exists():
            stored = json.loads(path.read_text())
            if stored["settings"] != settings:
                raise ConfigError(
                    f"{path} holds measurements made with {stored['settings']}, not {settings}; "
                    "delete it or pass another --cache"
                )
            self.table = LatencyTable(**stored["table"]) if stored["table"] else None
            self.children = stored["children"]

    def save(self) -> None:
        payload = {"settings": self.settings, "table": self.table.__dict__ if self.table else None, "children": self.children}
        atomic_write_bytes(self.path, json.dumps(payload, indent=0).encode())


def measure(space: ProxylessSpace, archs: list[Arch], cache: Cache, args: argparse.Namespace) -> np.ndarray:
    """Every arch's latency (ms), from the cache or measured now in a shuffled order (and cached)."""
    assert cache.table is not None
    todo = [i for i in np.random.default_rng(args.seed + 2).permutation(len(archs)) if space.format(archs[i]) not in cache.children]
    started = time.perf_counter()
    for done, i in enumerate(todo, start=1):
        model = space.build(archs[i])
        cache.children[space.format(archs[i])] = measure_model(
            model, INPUT_SHAPE, args.device, args.warmup, args.repeats, threads=args.threads
        )
        if done % SAVE_EVERY == 0 or done == len(todo):
            cache.save()
        if done % 200 == 0:
            rate = (time.perf_counter() - started) / done
            print(f"  {done}/{len(todo)} children measured, {rate:.2f} s each, ~{rate * (len(todo) - done) / 60:.1f} min left", flush=True)
    return np.array([cache.children[space.format(a)] for a in archs])


def remeasure(space: ProxylessSpace, archs: list[Arch], args: argparse.Namespace) -> np.ndarray:
    """The same children timed once more (not cached): how far two measurements of one child agree."""
    return np.array(
        [measure_model(space.build(a), INPUT_SHAPE, args.device, args.warmup, args.repeats, threads=args.threads) for a in archs]
    )


def fit_and_score(table: LatencyTable, fit: list[Arch], test: list[Arch], y_fit: np.ndarray, y_test: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
    """Each cost model fitted on ``fit`` and scored on ``test``, plus the table with its overhead."""
    features_fit, features_test = table_features(table, fit), table_features(table, test)
    scores: dict[str, dict[str, float]] = {}
    for name in registry.names("cost_model"):
        started = time.perf_counter()
        model = make_cost_model(name, seed=seed).fit(features_fit, y_fit)
        scores[name] = evaluate(y_test, model.predict(features_test)) | {"fit_seconds": time.perf_counter() - started}
    scores["table_with_overhead"] = evaluate(y_test, np.array([table.predict(a) for a in test]))
    return scores


def report(scores: dict[str, dict[str, float]], y_test: np.ndarray) -> tuple[str, dict[str, Any]]:
    """The markdown table and the headline figures (naive/best rMSE ratio, best model's ±10%)."""
    fitted = {name: s for name, s in scores.items() if name not in ("naive_sum", "table_with_overhead", "re-timed later (drift)")}
    best = min(fitted, key=lambda name: fitted[name]["rmse"])
    ratio = scores["naive_sum"]["rmse"] / fitted[best]["rmse"]
    lines = ["| model | rMSE (ms) | Spearman ρ | within ±10% |", "|---|---|---|---|"]
    for name, s in scores.items():
        mark = " (best)" if name == best else ""
        lines.append(f"| {name}{mark} | {s['rmse']:.3f} | {s['spearman']:.3f} | {100 * s['within_10pct']:.1f}% |")
    headline = {
        "best": best,
        "rmse_ratio_naive_over_best": ratio,
        "best_within_10pct": fitted[best]["within_10pct"],
        "test_latency_ms": {"min": float(y_test.min()), "median": float(np.median(y_test)), "max": float(y_test.max())},
    }
    lines.append("")
    lines.append(
        f"rMSE naive sum / {best}: **{ratio:.1f}x** (target >= {TARGET_RATIO}x; aw_nas 3.6x). "
        f"{best} within ±10%: **{100 * fitted[best]['within_10pct']:.1f}%** (target >= {100 * TARGET_WITHIN:.0f}%; "
        f"nn-Meter 99.0%). Test children: {headline['test_latency_ms']['min']:.2f} to "
        f"{headline['test_latency_ms']['max']:.2f} ms (median {headline['test_latency_ms']['median']:.2f})."
    )
    return "\n".join(lines), headline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 + 30 children, cache and results in the temp folder, no doc update")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--fit", type=int, default=2000, help="children to fit on (default 2000)")
    parser.add_argument("--test", type=int, default=1000, help="children to test on (default 1000)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per child and block; the median is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads while measuring")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drift-check", type=int, default=300, help="test children timed again after the fit, to show drift (0: none)")
    parser.add_argument("--cache", type=Path, help="measurement cache (default: measurements_<device>[_quick].json here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.fit, args.test = 60, 30
    device_name = args.device.replace(":", "")
    out_dir = Path(tempfile.gettempdir()) / "nasforge_latency_quick" if args.quick else HERE
    out_dir.mkdir(exist_ok=True)
    cache_path = args.cache or out_dir / f"measurements_{device_name}.json"
    settings = {
        "space": "proxyless small_input, 10 classes",
        "input_shape": list(INPUT_SHAPE),
        "device": args.device,
        "threads": args.threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
    }
    started = time.perf_counter()
    space = make_space()
    cache = Cache(cache_path, settings)
    if cache.table is None:
        print(f"profiling the blocks of ProxylessNAS at {INPUT_SHAPE} on {args.device}", flush=True)
        cache.table = profile_space(space, INPUT_SHAPE, args.device, args.threads, args.warmup, args.repeats)
        cache.save()
    table = cache.table
    archs = distinct_archs(space, args.fit + args.test, seed=args.seed)
    fit, test = archs[: args.fit], archs[args.fit :]
    missing = sum(space.format(a) not in cache.children for a in archs)
    print(f"{len(table.blocks)} blocks in the table; {len(archs) - missing} children cached, {missing} to measure", flush=True)
    y = measure(space, archs, cache, args)
    y_fit, y_test = y[: args.fit], y[args.fit :]
    scores = fit_and_score(table, fit, test, y_fit, y_test, args.seed)
    if args.drift_check:
        print(f"timing {args.drift_check} test children again (how far this machine's timings drift)", flush=True)
        again = remeasure(space, test[: args.drift_check], args)
        scores["re-timed later (drift)"] = evaluate(y_test[: args.drift_check], again)
    body, headline = report(scores, y_test)
    seconds = time.perf_counter() - started
    print(body)
    results = {"settings": settings, "device": table.device, "n_fit": args.fit, "n_test": args.test, "scores": scores, **headline}
    atomic_write_bytes(out_dir / f"results_{device_name}.json", json.dumps(results, indent=1).encode())
    if args.quick:
        print(f"quick run: measurements and results in {out_dir}")
        return
    where = table.device.get("gpu", "") if args.device.startswith("cuda") else ""
    section = (
        f"## Latency cost models on this machine ({args.device}{', ' + where if where else ''})\n\n"
        f"Command: `python benchmarks/latency_cpu/run.py{' --device ' + args.device if args.device != 'cpu' else ''}` — "
        f"{dt.date.today().isoformat()}, {machine_summary()}, {args.threads} thread(s), {seconds / 60:.1f} min "
        f"({missing} children measured, the rest from `{cache_path.name}`). ProxylessNAS small-input variant at "
        f"3x32x32; {len(table.blocks)} distinct blocks profiled (median of {args.repeats} after {args.warmup} warm-up "
        f"runs); {args.fit} sampled children to fit, {args.test} others to test, each the median of {args.repeats} "
        "end-to-end runs. Block features come from the table; `naive_sum` is the table's sum of blocks, "
        "`table_with_overhead` adds its overhead calibrated on 3 whole networks; `re-timed later (drift)` "
        f"times the first {args.drift_check} test children again after the fit and scores those times against the "
        "first ones: how far timings on this machine drift between two runs minutes apart (the models fit the "
        f"conditions of the first run). Load average {os.getloadavg()[0]:.1f} when the report was written.\n\n" + body
    )
    write_doc_section("latency_cpu" if args.device == "cpu" else f"latency_{device_name}", section)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:  # a cache of other settings, CUDA asked for where there is none
        raise SystemExit(f"error: {exc}") from None
