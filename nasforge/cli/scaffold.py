"""``nasforge new-component KIND NAME``: write a commented skeleton of a component (see
:mod:`nasforge.runner.scaffold`)."""

from __future__ import annotations

import argparse
from typing import Any

from nasforge.cli.console import console
from nasforge.core import registry
from nasforge.runner.scaffold import write_component

__all__ = ["add_commands", "cmd_new_component"]


def cmd_new_component(args: argparse.Namespace) -> int:
    path = write_component(args.kind, args.name, args.output)
    console.print(f"wrote {path}: a {args.kind} registered as {args.name!r}; fill in the TODOs", soft_wrap=True)
    console.print(f"check it with: python -m pytest {path}", soft_wrap=True)
    return 0


def add_commands(sub: Any) -> None:
    """The ``new-component`` sub-command."""
    p = sub.add_parser(
        "new-component",
        help="write a commented one-file skeleton of a component (a plugin that passes its kind's conformance suite)",
    )
    p.add_argument("kind", metavar="KIND", help=f"component kind: {', '.join(registry.KINDS)}")
    p.add_argument("name", metavar="NAME", help="registered name: a lowercase Python identifier")
    p.add_argument("-o", "--output", metavar="DIR", help="folder to write NAME.py in (default: $NASFORGE_HOME/plugins)")
    p.set_defaults(func=cmd_new_component)
