"""Peak memory and step time of DARTS, PC-DARTS, GDAS and ProxylessNAS supernet steps on the CPU.

One search step is what the ``dnas`` estimator runs per minibatch (first-order architecture step
on one batch, then the weight step on another), at the same batch for every method, on the DARTS
search supernet (small C) and on the NB201 supernet. Each (space, method) runs in a fresh
subprocess, so its peak resident memory (``ru_maxrss``) is its own; the table gives the peak
and its growth over the process's footprint just before the first step (model, data, imports).

    .venv/bin/python benchmarks/darts_memory/run.py            # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/darts_memory/run.py --no-docs  # print only
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared reporting module
from reporting import cpu_model, write_doc_section  # noqa: E402

SECTION = "darts_memory"
METHODS = ("darts", "pcdarts", "gdas", "proxyless")
SPACES: dict[str, dict[str, Any]] = {
    "darts": {"C": 8, "layers": 5, "supernet_C": 8, "supernet_layers": 5, "input_size": (32, 32)},
    "nb201": {"C": 16, "N": 2},
}
LABELS = {
    "darts": "DARTS search supernet, C=8, 5 cells, 3x32x32",
    "nb201": "NB201 supernet, C=16, N=2, 3x32x32",
}


def measure(space_name: str, method: str, batch: int, steps: int) -> dict[str, float]:
    """Run ``steps`` search steps in this process; peak RSS (MiB) and median step time (ms)."""
    from torch.utils.data import TensorDataset

    from nasforge.core import registry
    from nasforge.core.estimator import Context
    from nasforge.estimators.dnas import DifferentiableSupernetEstimator
    from nasforge.objectives.basic import SingleMetric
    from nasforge.tasks.splits import DataSplits

    torch.set_num_threads(1)
    torch.manual_seed(0)
    space = registry.create("space", space_name, SPACES[space_name])
    options = {"epochs": 10, "warmup": 0} if method in ("pcdarts", "proxyless") else {"epochs": 10}
    arch = registry.create("strategy", method, options)
    arch.setup(space, SingleMetric("val_acc"), seed=0)
    x = torch.randn(4 * batch, 3, 32, 32)
    y = torch.randint(0, 10, (4 * batch,))
    data = TensorDataset(x, y)
    estimator = DifferentiableSupernetEstimator(space, batch_size=batch)
    ctx = Context(space=space, data=DataSplits("random", data, data, data, 3, 10, (32, 32)), arch_parameters=arch)
    estimator._ensure(ctx, arch)  # builds the supernet and its optimiser, as update() does
    assert estimator.supernet is not None
    estimator.supernet.train()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for step in range(steps):
        w = slice((step % 2) * batch, (step % 2 + 1) * batch)
        a = slice((step % 2 + 2) * batch, (step % 2 + 3) * batch)
        started = time.perf_counter()
        estimator.step(arch, (x[w], y[w]), (x[a], y[a]), 0.025)
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mib": peak, "growth_mib": peak - before, "ms": 1000 * statistics.median(times[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="steps per method (the first is not timed)")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--one", nargs=2, metavar=("SPACE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.batch, args.steps)))
        return
    rows = []
    for space_name in SPACES:
        for method in METHODS:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    space_name,
                    method,
                    "--batch",
                    str(args.batch),
                    "--steps",
                    str(args.steps),
                ],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((space_name, method, result))
            print(space_name, method, result, flush=True)
    lines = [
        "| supernet | method | peak RSS MiB | growth over pre-step MiB | median ms/step |",
        "|---|---|---:|---:|---:|",
    ]
    for space_name, method, r in rows:
        lines.append(
            f"| {LABELS[space_name]} | {method} | {r['peak_mib']:.0f} | {r['growth_mib']:.0f} | {r['ms']:.0f} |"
        )
    command = "benchmarks/darts_memory/run.py" + (f" --batch {args.batch} --steps {args.steps}")
    body = f"""## Differentiable search: memory and step time

`{command}`
({datetime.date.today().isoformat()}; {cpu_model()}, 1 thread of {os.cpu_count()} cores (shared with other jobs),
torch {torch.__version__}, Python {platform.python_version()}).

One first-order search step of the `dnas` estimator (architecture step on one batch of {args.batch}, then
the weight step on another) per method, on random 3x32x32 inputs; PC-DARTS with K=4 (no warm-up, so
its architecture step runs). Each row is a fresh subprocess: peak resident memory (`ru_maxrss`), its growth
over the footprint just before the first step (the activations and gradients of a step), and the
median time of steps 2..{args.steps}. GDAS runs one sampled op per edge; ProxylessNAS one in the
weight step and two in the architecture step, only one of them with an autograd graph (the closed
gate's op runs without one, its output kept for the gate's gradient: the paper's one-path memory);
DARTS and PC-DARTS run every op (PC-DARTS on 1/4 of the channels).

""" + "\n".join(lines)
    print(body)
    if not args.no_docs:
        write_doc_section(SECTION, body)


if __name__ == "__main__":
    main()
