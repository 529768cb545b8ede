"""Latency cost models on 27 devices nobody here measured (HELP's NB201 and FBNet tables).

For each space and device, each model is fitted on ``n`` archs (10, 100, 900) drawn at random
and tested on all the others; Spearman rho and the share of predictions within ±10% are averaged
over draws, then summarised over devices (mean and min). Block costs given to the cost models
are FLOPs (nothing was measured per block on these devices):

- NB201: each op's FLOPs from ``count_flops`` on the op module at its stage's shape, times the
  cells per stage; the network's FLOPs are this sum plus an arch-independent constant, so the
  FLOPs baseline is exactly ``count_flops`` on ``NB201Space().build(arch)`` at 32x32 (checked
  in tests/test_hardware.py).
- FBNet: analytic FLOPs of each MBConv block (expand 1x1, depthwise kxk, project 1x1, groups)
  on FBNet's macro skeleton at 224x224.

``transfer`` is our take on HELP's idea: for the target device, ridge regressions on one-hot
(position, block) features are fitted on the *full* data of each of the 26 other devices
(source devices); the target's ``n`` samples then fit a ridge regression (regularisation picked
by leave-one-out) on the standardised predictions of those 26 source models, plus the one-hot
features (so it can correct per-op differences as n grows). No target measurement other than
the ``n`` training samples is used.

``ceiling`` is what the device's own data allows an additive model: one-hot ridge fitted on all
archs but 1,000 held out, tested on those. Where a device's measurements are noisy (phones with
whole-millisecond latencies), no model fitted on 100 of them can rank much better than that.

    python benchmarks/latency_devices/run.py            # full run; updates docs/benchmarks.md
    python benchmarks/latency_devices/run.py --quick    # 3 devices, 1 draw, results in the temp folder, no doc update
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per fit: the machine's cores are shared

import argparse
import csv
import datetime as dt
import gzip
import json
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import Ridge, RidgeCV

from nasforge.hardware.costmodels import BlockFeatures, evaluate, make_cost_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared reporting module
from reporting import cpu_model, write_doc_section  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
NS = (10, 100, 900)
COST_MODELS = ("linear_sum", "linear_sum_count", "gbt", "mlp", "lstm")
SLOW = ("gbt", "mlp", "lstm")  # fitted on the first draw of SLOW_DEVICES only
SLOW_DEVICES = 3
FBNET_BLOCKS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
# FBNet's macro skeleton: (layers, out channels, first stride) per stage, after a 16-channel stride-2 stem.
FBNET_STAGES = ((1, 16, 1), (4, 24, 2), (4, 32, 2), (4, 64, 2), (4, 112, 1), (4, 184, 2), (1, 352, 1))


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, list(reader)


def nb201() -> tuple[BlockFeatures, dict[str, np.ndarray]]:
    """NB201 cells: one token per edge (its op) and each op's FLOPs summed over the network."""
    from nasforge.nn.counters import count_flops
    from nasforge.nn.ops import OPS
    from nasforge.spaces.nb201 import NB201_OPS

    header, rows = _read(DATA / "nb201" / "help_nb201_latency_ms.csv.gz")
    a = header.index("arch_str")
    flops = np.array(
        [
            sum(5 * count_flops(OPS[op](c, c, 1), (c, s, s)) for c, s in ((16, 32), (32, 16), (64, 8)))
            for op in NB201_OPS
        ],
        dtype=np.float64,
    )
    op_id = {op: i for i, op in enumerate(NB201_OPS)}
    tokens = np.array([[op_id[e.split("~")[0]] for e in re.findall(r"[a-z_0-9]+~\d", r[a])] for r in rows])
    devices = {
        name: np.array([float(r[i]) for r in rows])
        for i, name in enumerate(header)
        if name not in ("index", "arch_str")
    }
    return BlockFeatures(tokens, flops[tokens] / 1e6, len(NB201_OPS)), devices


def _fbnet_layer_flops() -> np.ndarray:
    """``(22, 9)`` MFLOPs of each block at each layer (multiply-adds counted as two)."""
    table = []
    cin, size = 16, 112
    for layers, cout, stride in FBNET_STAGES:
        for i in range(layers):
            s = stride if i == 0 else 1
            out_size = size // s
            row = []
            for block in FBNET_BLOCKS:
                if block == "skip":
                    row.append(0.0 if (cin == cout and s == 1) else 2 * cin * cout * out_size**2)
                    continue
                parts = block.split("_")
                k, e = int(parts[0][1:]), int(parts[1][1:])
                g = int(parts[2][1:]) if len(parts) > 2 else 1
                mid = cin * e
                expand = 0 if e == 1 else 2 * cin * mid * size**2 / g
                depthwise = 2 * mid * k * k * out_size**2
                project = 2 * mid * cout * out_size**2 / g
                row.append(expand + depthwise + project)
            table.append(row)
            cin, size = cout, out_size
    return np.array(table) / 1e6


def fbnet() -> tuple[BlockFeatures, dict[str, np.ndarray]]:
    """FBNet archs: one token per layer (its block) and each block's analytic FLOPs."""
    header, rows = _read(DATA / "fbnet" / "help_fbnet_latency_ms.csv.gz")
    a = header.index("arch_ops")
    block_id = {b: i for i, b in enumerate(FBNET_BLOCKS)}
    tokens = np.array([[block_id[b] for b in r[a].split("-")] for r in rows])
    flops = _fbnet_layer_flops()
    costs = flops[np.arange(tokens.shape[1])[None, :], tokens]
    devices = {
        name: np.array([float(r[i]) for r in rows]) for i, name in enumerate(header) if name not in ("arch", "arch_ops")
    }
    return BlockFeatures(tokens, costs, len(FBNET_BLOCKS)), devices


def source_predictions(onehot: np.ndarray, devices: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each device's ridge-on-one-hot model fitted on all its archs, predicting every arch."""
    Y = np.column_stack(list(devices.values()))
    pred = Ridge(alpha=1.0).fit(onehot, Y).predict(onehot)
    return {name: pred[:, i] for i, name in enumerate(devices)}


def transfer_fit_predict(
    sources: np.ndarray, onehot: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray
) -> np.ndarray:
    """Ridge (alpha by leave-one-out) on [standardised source predictions, one-hot]."""
    X = np.column_stack([(sources - sources[train].mean(0)) / (sources[train].std(0) + 1e-12), onehot])
    model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(X[train], y[train])
    return model.predict(X[test])


def ceiling(features: BlockFeatures, devices: dict[str, np.ndarray], seed: int, held_out: int = 1000) -> dict:
    """Per device: one-hot ridge fitted on all archs but ``held_out``, scored on those."""
    onehot = features.onehot()
    perm = np.random.default_rng([seed, held_out]).permutation(len(onehot))
    train, test = perm[held_out:], perm[:held_out]
    return {
        device: evaluate(y[test], RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(onehot[train], y[train]).predict(onehot[test]))
        for device, y in devices.items()
    }


def run_space(name: str, features: BlockFeatures, devices: dict[str, np.ndarray], draws: int, seed: int) -> dict:
    """Every model on every device and n; returns {model: {n: {device: metrics}}}."""
    onehot = features.onehot()
    sources = source_predictions(onehot, devices)
    results: dict = defaultdict(lambda: defaultdict(dict))
    flops = features.costs.sum(axis=1)
    for d_index, (device, y) in enumerate(devices.items()):
        others = np.column_stack([p for other, p in sources.items() if other != device])
        for n in NS:
            scores: dict[str, list[dict[str, float]]] = defaultdict(list)
            for draw in range(draws):
                rng = np.random.default_rng([seed, d_index, n, draw])
                perm = rng.permutation(len(y))
                train, test = perm[:n], perm[n:]
                a, b = np.polyfit(flops[train], y[train], 1)
                scores["flops"].append(
                    evaluate(y[test], a * flops[test] + b) | {"spearman": evaluate(y[test], flops[test])["spearman"]}
                )
                ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(onehot[train], y[train])
                scores["ridge_onehot"].append(evaluate(y[test], ridge.predict(onehot[test])))
                scores["transfer"].append(evaluate(y[test], transfer_fit_predict(others, onehot, y, train, test)))
                for model_name in COST_MODELS:
                    if model_name in SLOW and (draw > 0 or d_index % (len(devices) // SLOW_DEVICES) != 0):
                        continue
                    model = make_cost_model(model_name, seed=draw).fit(features[train], y[train])
                    scores[model_name].append(evaluate(y[test], model.predict(features[test])))
            for model_name, runs in sorted(scores.items()):
                results[model_name][n][device] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        print(
            f"{name} {device}: "
            + ", ".join(f"n={n} transfer rho {results['transfer'][n][device]['spearman']:.3f}" for n in NS),
            flush=True,
        )
    return json.loads(json.dumps(results))


README_RIDGE = {  # the shared data README's plain ridge figures: (mean, min) rho and within ±10%
    ("NB201", 10): ((0.435, 0.320), (0.201, 0.114)),
    ("NB201", 100): ((0.968, 0.867), (0.855, 0.421)),
    ("NB201", 900): ((0.976, 0.901), (0.878, 0.456)),
    ("FBNet", 10): ((0.092, 0.044), (0.040, 0.011)),
    ("FBNet", 100): ((0.586, 0.241), (0.724, 0.310)),
    ("FBNet", 900): ((0.945, 0.606), (0.938, 0.509)),
}


def ceiling_note(all_results: dict[str, dict], ceilings: dict[str, dict]) -> str:
    """The devices under ρ 0.9 with ``transfer`` at n=100, next to their data ceiling."""
    rows = [
        f"{space} {device} {per_device[device]['spearman']:.3f} (ceiling {ceilings[space][device]['spearman']:.3f})"
        for space, results in all_results.items()
        for per_device in [results["transfer"]["100"]]
        for device in per_device
        if per_device[device]["spearman"] < 0.9
    ]
    mean = {space: np.mean([m["spearman"] for m in c.values()]) for space, c in ceilings.items()}
    return (
        "Data ceiling (one-hot ridge fitted on all archs of the device but 1,000, tested on those), mean ρ: "
        + ", ".join(f"{space} {value:.3f}" for space, value in mean.items())
        + ". Devices under ρ 0.9 with `transfer` at n=100: "
        + ("; ".join(rows) if rows else "none")
        + "."
    )


def table(all_results: dict[str, dict]) -> str:
    lines = ["| space | n | model | Spearman ρ mean (min) | within ±10% mean (min) |", "|---|---|---|---|---|"]
    for space, results in all_results.items():
        for n in NS:
            (rm, rn), (wm, wn) = README_RIDGE[(space, n)]
            lines.append(f"| {space} | {n} | README plain ridge | {rm:.3f} ({rn:.3f}) | {wm:.3f} ({wn:.3f}) |")
            for model_name, per_n in results.items():
                per_device = per_n[str(n)]
                rho = [m["spearman"] for m in per_device.values()]
                within = [m["within_10pct"] for m in per_device.values()]
                lines.append(
                    f"| {space} | {n} | {model_name} | {np.mean(rho):.3f} ({np.min(rho):.3f}) | "
                    f"{np.mean(within):.3f} ({np.min(within):.3f}) |"
                )
    return "\n".join(lines)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 devices, 1 draw, no doc update")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    draws = 1 if args.quick else args.draws
    all_results, ceilings = {}, {}
    for space, load in (("NB201", nb201), ("FBNet", fbnet)):
        features, devices = load()
        if args.quick:
            devices = dict(list(devices.items())[:3])
        all_results[space] = run_space(space, features, devices, draws, args.seed)
        ceilings[space] = ceiling(features, devices, args.seed)
    out = Path(tempfile.gettempdir()) / "latency_devices_quick.json" if args.quick else Path(__file__).parent / "results.json"
    out.write_text(json.dumps({**all_results, "ceiling": ceilings}, indent=1))
    body = table(all_results) + "\n\n" + ceiling_note(all_results, ceilings)
    print(body)
    if args.quick:
        return
    cpu = cpu_model()
    section = (
        "## Latency cost models on 27 unmeasured devices (HELP NB201 and FBNet tables)\n\n"
        f"Command: `python benchmarks/latency_devices/run.py` — {dt.date.today().isoformat()}, {cpu}, "
        f"{os.cpu_count()} cores, {time.time() - started:.0f} s. Fit on n archs per device, test on the rest, "
        f"mean over {draws} draws, then mean (min) over the 27 devices ({', '.join(SLOW)}: 1 draw on "
        f"{SLOW_DEVICES} devices only, every ninth: their mean (min) is over those 3). "
        "Block costs are FLOPs; `flops` ranks by FLOPs alone (within ±10% after a linear fit on the n archs). "
        "`transfer`: ridge (alpha by leave-one-out) on [standardised predictions of one-hot ridge models fitted on "
        "the full data of the 26 other devices, one-hot (position, block)], fitted on the target's n archs only. "
        "Anchors: HELP ρ 0.932 at 10 samples, BRP-NAS 0.805 at 3,200, FLOPs 0.787. Per-device figures: "
        "`benchmarks/latency_devices/results.json`.\n\n" + body
    )
    write_doc_section("latency_devices", section)


if __name__ == "__main__":
    main()
