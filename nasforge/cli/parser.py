"""The ``nasforge`` argument parser, assembled from the command modules, and :func:`main`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from nasforge.cli import components, hardware, scaffold, search, train
from nasforge.cli.console import err_console
from nasforge.core.errors import NasforgeError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasforge", description="Modular neural architecture search on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (search, train, hardware, components, scaffold):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for user errors)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except NasforgeError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; a search can be continued with `nasforge search --resume RUN_DIR`")
        return 130
