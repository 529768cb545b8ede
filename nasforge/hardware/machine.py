"""What machine this is: the CPU's model and a one-line summary (GPU first when timing on CUDA),
recorded with latency tables and benchmark results."""

from __future__ import annotations

import os
import platform

__all__ = ["cpu_model", "machine_summary"]


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
