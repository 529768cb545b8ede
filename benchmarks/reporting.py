"""Shared by the benchmarks (not part of the package): their sections of docs/benchmarks.md.

Each benchmark owns one section between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``
markers and replaces only that, so benchmarks run at different times never clobber each other.
A benchmark script puts this folder on ``sys.path`` and imports ``reporting``.
"""

from __future__ import annotations

from pathlib import Path

from nasforge.core.atomic import atomic_write_bytes
from nasforge.hardware.machine import cpu_model, machine_summary

__all__ = ["cpu_model", "machine_summary", "write_doc_section", "BENCHMARKS_DOC"]

#: The benchmarks' report.
BENCHMARKS_DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_doc_section(section: str, body: str, path: Path = BENCHMARKS_DOC) -> None:
    """Replace section ``section`` of ``path`` with ``body`` (appended when absent), atomically."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_bytes(path, text.encode())
