"""``nasforge status`` and ``nasforge report``: a run directory summed up in the terminal, or as
one self-contained HTML file. Both read the run through :func:`nasforge.runner.summary.summarize`
(the store opened read-only), so they work on running, finished and read-only runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from nasforge.cli.arguments import whole_number
from nasforge.cli.console import console, fmt
from nasforge.core.errors import ConfigError

__all__ = ["add_commands", "cmd_status", "cmd_report"]

_STATE_STYLE = {"running": "bold green", "finished": "bold cyan", "stopped": "bold yellow", "killed": "bold red"}


def _budget_text(used: float | int, budget: Any, unit: str) -> str:
    shown = f"{used:.0f}" if isinstance(used, float) else str(used)
    if budget:
        return f"{shown} / {budget:g} {unit} ({100 * used / budget:.0f}%)"
    return f"{shown} {unit} (no limit)"


def cmd_status(args: argparse.Namespace) -> int:
    from nasforge.runner.summary import summarize

    summary = summarize(Path(args.run_dir), top=args.top, rows=False)
    if args.json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
        return 0
    state = summary.state
    style = _STATE_STYLE.get(state, "bold")
    detail = {
        "running": f" (PID {summary.pid})",
        "finished": f": {summary.stop_reason}" if summary.stop_reason else "",
        "killed": f" (its writer, PID {summary.pid}, died; resume with `nasforge search --resume {summary.run_dir}`)",
        "stopped": f" (resume with `nasforge search --resume {summary.run_dir}`)",
    }[state]
    console.print(f"[bold]{summary.name}[/bold]  {summary.run_dir}")
    console.print(f"state: [{style}]{state}[/{style}]{detail}")
    console.print(
        f"space: {summary.space}  strategy: {summary.strategy}  estimator: {summary.estimator}  objective: {', '.join(summary.objectives)}"
    )
    console.print(
        f"trials: {summary.trials} done ({summary.completed} completed, {summary.failed} failed"
        f"{f', {summary.infeasible} infeasible' if summary.infeasible else ''})"
    )
    console.print(
        f"budget used: {_budget_text(summary.trials, summary.budget.get('trials'), 'trials')}, "
        f"{_budget_text(summary.elapsed, summary.budget.get('seconds'), 's')}"
    )
    if summary.final:
        console.print(f"trained winner: {summary.final}")
    if summary.best:
        title = (
            f"Pareto front ({len(summary.pareto)} archs, first {len(summary.best)})"
            if summary.multi_objective
            else f"best {len(summary.best)}"
        )
        table = Table(title=title)
        table.add_column("trial", justify="right")
        for name in summary.objectives:
            table.add_column(name, justify="right")
        table.add_column("arch")
        for row in summary.best:
            table.add_row(str(row.number), *(fmt(row.values[n]) for n in summary.objectives), row.arch)
        console.print(table)
    else:
        console.print("no trial completed feasibly yet")
    if summary.last_error:
        console.print(f"last error (trial {summary.last_error_trial}): [red]{summary.last_error}[/red]", markup=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nasforge.runner.summary import summarize
    from nasforge.views.report import render_report

    output = Path(args.output)
    if output.exists() and not args.force:
        raise ConfigError(f"{output} already exists; give another -o/--output, or --force to overwrite it")
    summary = summarize(Path(args.run_dir))
    html = render_report(summary)
    from nasforge.core.atomic import atomic_write_bytes

    atomic_write_bytes(output, html.encode())
    console.print(f"wrote the report of {summary.run_dir} ({summary.trials} trials, {summary.state}) to {output}")
    return 0


def add_commands(sub: Any) -> None:
    """The ``status`` and ``report`` sub-commands."""
    p = sub.add_parser("status", help="sum up a run: state, trials, budget used, best archs, last error")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--top", type=whole_number("--top", 1), default=5, help="how many best archs to show (default 5)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "report", help="write a run's overview, trials, charts and best arch as one self-contained HTML file"
    )
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=cmd_report)
