"""The ``nasforge`` argument parser, assembled from the command modules, and :func:`main`."""

from __future__ import annotations

import argparse
import errno
import sqlite3
from collections.abc import Sequence

from rich.markup import escape

from nasforge.cli import components, hardware, scaffold, search, status, train
from nasforge.cli.console import err_console
from nasforge.core.errors import NasforgeError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasforge", description="Modular neural architecture search on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (search, train, hardware, components, scaffold, status):
        module.add_commands(sub)
    return parser


#: errno values of a full disk or an exhausted quota.
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: errno values of a target that may not be written.
_READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}


def _storage_message(exc: BaseException) -> str | None:
    """The one-paragraph message for a file that could not be written, or None for another error."""
    where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
    full = getattr(exc, "errno", None) in _FULL or "disk is full" in str(exc)
    if full:
        return (
            f"no space left on the device{where}. Nothing was lost: nasforge replaces each file atomically, so "
            "everything saved before (trials, checkpoints, models) is intact. Free some space and run the command "
            "again (a search continues with `nasforge search --resume RUN_DIR`)."
        )
    if getattr(exc, "errno", None) in _READ_ONLY:
        return f"cannot write{where or ' a file'}: {exc.strerror}; choose a place you can write to. Nothing else was changed."  # type: ignore[attr-defined]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for user errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # argument types raise ConfigError for out-of-range values
        return int(args.func(args))
    except NasforgeError as exc:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)  # a message may hold [brackets]
        return 2
    except (OSError, sqlite3.OperationalError) as exc:
        message = _storage_message(exc)
        if message is None:
            raise
        err_console.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True, markup=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")  # search and pipeline say how to resume their own run
        return 130
