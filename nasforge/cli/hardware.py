"""``nasforge profile`` and ``costmodel``: latency tables and cost models measured on this machine."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from nasforge.cli.arguments import yaml_mapping
from nasforge.cli.console import console, step_progress
from nasforge.core import registry
from nasforge.core.errors import ConfigError

__all__ = ["add_commands", "cmd_profile", "cmd_costmodel"]


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

    options = yaml_mapping("--space-options", args.space_options)
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
    with step_progress("profile", "blocks measured") as progress:
        table = profile_space(
            space, [args.batch, *size], args.device, args.threads, args.warmup, args.repeats, energy=measure_energy,
            progress=progress,
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
        options = yaml_mapping("--space-options", args.space_options)
        table = LatencyTable.load(args.table)
        console.print(f"measuring {args.archs} sampled children end to end to fit {args.model!r}")
        with step_progress("costmodel fit", "children measured") as progress:
            fitted = fit_cost_model(
                args.space, options, table, args.model, args.archs, seed=args.seed, repeats=args.repeats, progress=progress
            )
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
    with step_progress("costmodel eval", "children measured") as progress:
        archs, measured = measure_children(
            fitted.space(), fitted.table, args.archs, seed=args.seed + 1, repeats=args.repeats, exclude=fitted.fit_archs,
            progress=progress,
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


def add_commands(sub: Any) -> None:
    """The ``profile`` and ``costmodel`` sub-commands."""
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
