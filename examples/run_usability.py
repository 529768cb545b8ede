"""Run one of the usability setups of docs/usability.md: ``python examples/run_usability.py a|b|c``.

Each setup is a complete config next to this file, runnable as ``nasforge search CONFIG`` too;
this launcher only adds what a demo needs: Fashion-MNIST from ``../shared/data`` when present,
else the bundled digits (it says which), and ``--quick`` (a tiny budget, for tests).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from nasforge.cli import main as nasforge_main
from nasforge.core.errors import DataNotFoundError
from nasforge.core.paths import find_data_dir
from nasforge.tasks.datasets import FashionMnist

EXAMPLES = Path(__file__).resolve().parent
SETUPS = {"a": "usability_a_random.yaml", "b": "usability_b_proxyless.yaml", "c": "usability_c_ofa.yaml"}

#: Overrides of ``--quick``: a few hundred images and a handful of cheap trials.
QUICK = {
    "a": ["data.train_limit=200", "estimator.epochs=1", "budget.trials=2"],
    "b": ["data.train_limit=300", "strategy.epochs=1", "strategy.warmup=0", "estimator.bn_batches=1", "budget.trials=2"],
    "c": ["data.train_limit=200", "estimator.stages=[{elastic: none, epochs: 1}, {elastic: width, epochs: 1}]", "estimator.bn_batches=1", "budget.trials=3"],
}


def data_overrides() -> list[str]:
    """Fashion-MNIST where it is found (``../shared/data`` is searched too), else the digits."""
    shared = EXAMPLES.parents[1] / "shared" / "data"
    if shared.is_dir() and "NASFORGE_DATA_DIR" not in os.environ:
        os.environ["NASFORGE_DATA_DIR"] = str(shared)
    try:
        find_data_dir(FashionMnist.subdir, [(f, f + ".gz") for f in FashionMnist.files], extra=FashionMnist.extra_dirs)
    except DataNotFoundError:
        print("data: Fashion-MNIST not found; falling back to the bundled digits (8x8)")
        return ["data.type=digits", "data.test_limit=null"]
    print("data: Fashion-MNIST")
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setup", choices=sorted(SETUPS), help="a: random + scratch, b: ProxylessNAS, c: OFA-style")
    parser.add_argument("--quick", action="store_true", help="a tiny run (seconds), for tests")
    parser.add_argument("--run-dir", help="where the run goes (default: a fresh temporary folder)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = f"space.factory={EXAMPLES / 'usability_resnet.py'}:resnet"  # the configs' path is relative to the repo
    overrides = [model, *data_overrides(), *(QUICK[args.setup] if args.quick else [])]
    run_dir = args.run_dir or tempfile.mkdtemp(prefix=f"usability-{args.setup}-")
    command = ["search", str(EXAMPLES / SETUPS[args.setup]), "--run-dir", run_dir, "--quiet"]
    return nasforge_main(command + [f"--set={o}" for o in overrides])


if __name__ == "__main__":
    raise SystemExit(main())
