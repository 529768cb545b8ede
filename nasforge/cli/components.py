"""``nasforge registry`` and ``gen-config``: the registered components, and a config to start from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from nasforge.cli.console import console, err_console
from nasforge.core import registry
from nasforge.core.errors import ConfigError

__all__ = ["add_commands", "cmd_registry", "cmd_gen_config"]


def cmd_registry(args: argparse.Namespace) -> int:
    import json

    from nasforge.core.capabilities import declared

    rows = [
        {
            "kind": reg.kind,
            "name": reg.name,
            "summary": reg.summary,
            "tags": sorted(reg.tags),
            "module": getattr(reg.target, "__module__", ""),
            **({"capabilities": list(declared(reg.target))} if reg.kind == "space" else {}),
        }
        for reg in registry.registrations(args.kind, tag=args.tag)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    show_capabilities = any("capabilities" in row for row in rows)
    if not console.is_terminal:  # pipes and files: one line per component, nothing wrapped
        kind_width = max((len(row["kind"]) for row in rows), default=0)
        name_width = max((len(row["name"]) for row in rows), default=0)
        for row in rows:
            extras = [f"[tags: {', '.join(row['tags'])}]"] if row["tags"] else []
            if row.get("capabilities"):
                extras.append(f"[capabilities: {', '.join(row['capabilities'])}]")
            line = f"{row['kind']:<{kind_width}}  {row['name']:<{name_width}}  {row['summary']}"
            print(" ".join([line, *extras]).rstrip())
        return 0
    table = Table(title="registered components")
    for column in ("kind", "type", "tags", *(("capabilities",) if show_capabilities else ()), "summary"):
        table.add_column(column)
    for row in rows:
        capabilities = (", ".join(row.get("capabilities", [])),) if show_capabilities else ()
        table.add_row(row["kind"], row["name"], ", ".join(row["tags"]), *capabilities, row["summary"])
    console.print(table, markup=False)
    return 0


def cmd_gen_config(args: argparse.Namespace) -> int:
    from nasforge.runner.config import parse_config
    from nasforge.runner.gen_config import FILL_IN, generate_config

    text = generate_config(args.space, strategy=args.strategy, estimator=args.estimator)
    try:
        parse_config(yaml.safe_load(text), "<generated config>")  # what we hand out must load...
    except ConfigError as exc:
        if FILL_IN not in text:
            raise
        # ...except where a component has a required option with no example value
        err_console.print(f"[yellow]set the options marked `{FILL_IN}` before running this config[/yellow] ({exc})")
    if args.output:
        from nasforge.core.atomic import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode())
        console.print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def add_commands(sub: Any) -> None:
    """The ``registry`` and ``gen-config`` sub-commands."""
    p = sub.add_parser("registry", help="list registered components (every kind, or one)")
    p.add_argument("kind", nargs="?", choices=list(registry.KINDS), help="only this kind")
    p.add_argument("--tag", help="only components with this tag")
    p.add_argument("--json", action="store_true", help="print a JSON list of {kind, name, summary, tags, module}")
    p.set_defaults(func=cmd_registry)

    p = sub.add_parser("gen-config", help="print a sample config for a space, listing every compatible component")
    p.add_argument("--space", required=True, help="registered space type")
    p.add_argument("--strategy", help="strategy to write out (default: evolution)")
    p.add_argument("--estimator", help="estimator to write out (default: scratch)")
    p.add_argument("-o", "--output", help="file to write (default: print)")
    p.set_defaults(func=cmd_gen_config)
