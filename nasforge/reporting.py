"""Shared by the benchmarks: what machine this is, and their sections of docs/benchmarks.md.

Each benchmark owns one section between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``
markers and replaces only that, so benchmarks run at different times never clobber each other.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_model", "machine_summary", "write_doc_section", "BENCHMARKS_DOC"]

#: The benchmarks' report, relative to the repository root.
BENCHMARKS_DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary(device: str = "cpu") -> str:
    """The machine line every benchmark reports: ``CPU, N cores, Python x, torch y``.

    For a CUDA ``device`` (``"cuda"``, ``"cuda:1"``) the GPU comes first, with its memory and
    the CUDA version torch was built with, since it, not the CPU, decides the timings:
    ``GPU (80 GiB), CUDA 12.4, on CPU, N cores, Python x, torch y``.
    """
    import torch

    host = f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"
    if torch.device(device).type != "cuda":
        return host
    props = torch.cuda.get_device_properties(torch.device(device))
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, on {host}"


def write_doc_section(section: str, body: str, path: Path = BENCHMARKS_DOC) -> None:
    """Replace section ``section`` of ``path`` with ``body`` (appended when absent), atomically."""
    from nasforge.core.atomic import atomic_write_bytes

    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_bytes(path, text.encode())
