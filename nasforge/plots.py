"""Pictures of a differentiable search: candidate weights over epochs, and the derived cell.

:func:`plot_alphas` reads ``RUN_DIR/alphas.jsonl`` (written by the ``dnas`` estimator) and draws
one heatmap per epoch shown, candidates x edges. matplotlib is an optional dependency, imported
only here. :func:`cell_text` needs nothing: it writes an arch's edges as a text graph.
:func:`draw_cell` draws the cells as graphs with graphviz's ``dot`` where it is installed, and
otherwise leaves the graphviz source (``.dot``) and the text form, so it never fails for want
of graphviz.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nasforge.core.arch import Arch
from nasforge.core.errors import NasforgeError

__all__ = ["read_alphas", "plot_alphas", "cell_text", "cell_dot", "draw_cell"]


def read_alphas(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``RUN_DIR/alphas.jsonl``, in epoch order."""
    path = Path(run_dir) / "alphas.jsonl"
    if not path.exists():
        raise NasforgeError(f"{path} does not exist; it is written by searches with `estimator: {{type: dnas}}`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_alphas(run_dir: str | Path, output: str | Path, epochs: Sequence[int] | None = None) -> Path:
    """Draw heatmaps of the candidates' weights (rows: candidates, columns: edges) per epoch.

    Args:
        run_dir: the search's run directory.
        output: the image file to write (any format matplotlib knows from the suffix).
        epochs: which epochs to draw (default: first, middle and last).

    Returns:
        The path written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NasforgeError("plot_alphas needs matplotlib: pip install matplotlib") from None
    records = {r["epoch"]: r for r in read_alphas(run_dir)}
    if not records:
        raise NasforgeError(f"{Path(run_dir) / 'alphas.jsonl'} holds no epoch yet")
    ordered = sorted(records)
    chosen = list(epochs) if epochs is not None else sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1]})
    missing = [e for e in chosen if e not in records]
    if missing:
        raise NasforgeError(f"no record of epoch(s) {missing}; recorded: {ordered[0]}..{ordered[-1]}")
    fig, axes = plt.subplots(
        1, len(chosen), figsize=(4 + 0.5 * len(records[ordered[-1]]["probs"]) * len(chosen), 4), squeeze=False
    )
    for ax, epoch in zip(axes[0], chosen, strict=True):
        probs: Mapping[str, list[float]] = records[epoch]["probs"]
        edges = list(probs)
        candidates = records[epoch]["candidates"][edges[0]]
        grid = [[probs[e][i] if i < len(probs[e]) else float("nan") for e in edges] for i in range(len(candidates))]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0)
        ax.set_xticks(range(len(edges)), edges, rotation=90, fontsize=7)
        ax.set_yticks(range(len(candidates)), [str(c) for c in candidates], fontsize=7)
        ax.set_title(f"epoch {epoch}")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    output = Path(output)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


_EDGE = re.compile(r"^(?:(?P<cell>.+)\.)?(?P<node>\d+)<-(?P<source>\d+)$")
_SLOT = re.compile(r"^(?P<cell>.+)\.n(?P<node>\d+)\.(?P<kind>in|op)(?P<slot>\d+)$")


def _cells(arch: Arch | Mapping[str, Any]) -> tuple[dict[str, dict[int, list[tuple[int, str]]]], list[str]]:
    """An arch's cells as ``{cell: {node: [(input, op), ...]}}`` (``none`` edges left out), and
    its other choices as ``name = value`` lines."""
    cells: dict[str, dict[int, list[tuple[int, str]]]] = {}
    slots: dict[tuple[str, int, str], dict[str, Any]] = {}
    other: list[str] = []
    for name, value in arch.items():
        if match := _EDGE.match(name):
            if value != "none":
                cells.setdefault(match["cell"] or "cell", {}).setdefault(int(match["node"]), []).append(
                    (int(match["source"]), str(value))
                )
        elif match := _SLOT.match(name):
            slots.setdefault((match["cell"], int(match["node"]), match["slot"]), {})[match["kind"]] = value
        else:
            other.append(f"{name} = {value}")
    for (cell, node, _), slot in sorted(slots.items()):
        cells.setdefault(cell, {}).setdefault(node, []).append((int(slot["in"]), str(slot["op"])))
    return cells, other


def cell_text(arch: Arch | Mapping[str, Any]) -> str:
    """An arch's cell(s) as text, one line per node: ``node 2 <- 0 (sep_conv_3x3), 1 (skip)``.

    Understands NB201-style edge choices (``"i<-j"``, ``none`` edges left out) and DARTS node
    choices (``"normal.n2.in0"`` ... ``"op1"``); other choices are listed as ``name = value``.
    """
    cells, other = _cells(arch)
    lines: list[str] = []
    for cell, nodes in cells.items():
        lines.append(f"{cell}:")
        lines += [
            f"  node {node} <- " + ", ".join(f"{src} ({op})" for src, op in sorted(inputs))
            for node, inputs in sorted(nodes.items())
        ]
    return "\n".join(lines + other)


def cell_dot(arch: Arch | Mapping[str, Any]) -> str:
    """Graphviz source of an arch's cells: one cluster per cell, an arrow per kept edge labelled
    with its op; other choices (a blockwise arch's layers) as a chain of boxes."""
    cells, other = _cells(arch)
    lines = ["digraph cells {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor=lightblue];']
    for k, (cell, nodes) in enumerate(cells.items()):
        lines += [f"  subgraph cluster_{k} {{", f'    label="{cell}";']
        names = sorted({n for node, inputs in nodes.items() for n in (node, *(src for src, _ in inputs))})
        labels = _node_labels(names, set(nodes))
        lines += [f'    "{cell}.{n}" [label="{labels.get(n, n)}"];' for n in names]
        lines += [
            f'    "{cell}.{src}" -> "{cell}.{node}" [label="{op}"];'
            for node, inputs in sorted(nodes.items())
            for src, op in sorted(inputs)
        ]
        if len(names) - len(nodes) == 2:  # a DARTS cell: every intermediate node is concatenated
            lines.append(f'    "{cell}.out" [label="c_{{k}}", fillcolor=palegreen];')
            lines += [f'    "{cell}.{n}" -> "{cell}.out" [style=dashed];' for n in sorted(nodes)]
        lines.append("  }")
    for i, line in enumerate(other):
        lines.append(f'  other{i} [label="{line}", fillcolor=white];')
        if i:
            lines.append(f"  other{i - 1} -> other{i};")
    return "\n".join([*lines, "}"]) + "\n"


def _node_labels(names: list[Any], computed: set[Any]) -> dict[Any, str]:
    """Readable names of a cell's input and output nodes: DARTS cells read the two previous cells'
    outputs (c_{k-2}, c_{k-1}); an NB201 cell has one input node and its last node is the output."""
    sources = [n for n in names if n not in computed]
    if len(sources) == 2:
        return {sources[0]: "c_{k-2}", sources[1]: "c_{k-1}"}
    if len(sources) == 1 and computed:
        return {sources[0]: "input", max(computed): "output"}
    return {}


def draw_cell(arch: Arch | Mapping[str, Any], output: str | Path) -> list[Path]:
    """Draw an arch's cells to ``output`` (e.g. ``cell.png``) with graphviz's ``dot``.

    Always writes the graphviz source beside it (``.dot``); where ``dot`` is not installed or
    fails, writes the text form (``.txt``, :func:`cell_text`) instead of the image, so it never
    fails for want of graphviz.

    Returns:
        The files written.
    """
    output = Path(output)
    source = output.with_suffix(".dot")
    source.write_text(cell_dot(arch))
    dot = shutil.which("dot")
    if dot is not None:
        fmt = output.suffix.lstrip(".") or "png"
        try:
            done = subprocess.run([dot, f"-T{fmt}", str(source), "-o", str(output)], capture_output=True, timeout=60)
            if done.returncode == 0 and output.is_file():
                return [source, output]
        except (OSError, subprocess.TimeoutExpired):
            pass
    text = output.with_suffix(".txt")
    text.write_text(cell_text(arch) + "\n")
    return [source, text]
