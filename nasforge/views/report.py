"""``nasforge report``: a run as one self-contained HTML file (inline CSS, script and SVG; nothing
fetched from a network), to attach to a paper or a ticket.

It shows the run's overview, the best-so-far chart, the Pareto front of a multi-objective run,
the best arch (its cells drawn as text, and as SVG where graphviz's ``dot`` is installed), the
failed trials with their tracebacks, and every trial in a table sorted by clicking its headers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from html import escape
from typing import Any

from nasforge.plots import _cells, cell_dot, cell_text
from nasforge.runner.summary import RunSummary, TrialRow
from nasforge.views.svg import pareto_chart, progress_chart

__all__ = ["render_report", "arch_drawing", "CSS", "SORT_SCRIPT"]

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
td.arch,th.arch{text-align:left;font-family:monospace;word-break:break-all}
table.sortable th{cursor:pointer;background:#f4f4f4;user-select:none}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
tr.failed{background:#fff0f0}tr.infeasible{color:#999}
dl.overview{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{font-weight:600}dd{margin:0}
.state-running{color:#080}.state-finished{color:#069}.state-stopped{color:#a60}.state-killed{color:#c00}
svg.chart{background:#fff;border:1px solid #ddd}svg .axis{stroke:#444}svg .grid{stroke:#eee}
svg .tick,svg .label{font-size:11px;fill:#444}svg .pt{fill:#4a7fc1;fill-opacity:.7}
svg .pt.front{fill:#d9480f;fill-opacity:1}svg .best{fill:none;stroke:#d9480f;stroke-width:2}
svg .front-line{fill:none;stroke:#d9480f;stroke-dasharray:4 3}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}details{margin:6px 0}
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col], v = cell.getAttribute("data-v");
        if (v === null) v = cell.textContent;
        var n = parseFloat(v);
        return isNaN(n) ? v : n;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _cell(value: float | None) -> str:
    return f'<td data-v="{"" if value is None else repr(float(value))}">{_num(value)}</td>'


def arch_drawing(arch: Any, text: str) -> str:
    """HTML for an arch: its cells as an SVG graph (graphviz's ``dot``, where installed) and as
    text; an arch with no cells as its notation and a list of its choices."""
    parts: list[str] = [f'<p class="arch"><code>{escape(text)}</code></p>']
    if not isinstance(arch, Mapping):
        return parts[0]
    cells, _ = _cells(arch)
    if cells and shutil.which("dot"):
        try:
            svg = subprocess.run(
                ["dot", "-Tsvg"], input=cell_dot(arch), capture_output=True, text=True, timeout=30, check=True
            ).stdout
            svg = re.sub(r"<\?xml[^>]*>|<!DOCTYPE[^>]*>|<!--.*?-->", "", svg, flags=re.S)
            svg = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg)  # inline SVG needs no namespace (and names no URL)
            parts.append(f'<div class="cell-graph">{svg.strip()}</div>')
        except (OSError, subprocess.SubprocessError):
            pass
    drawn = cell_text(arch)
    if drawn:
        parts.append(f'<pre class="cell">{escape(drawn)}</pre>')
    return "".join(parts)


def _overview(s: RunSummary) -> str:
    used = s.budget_used()
    items = [
        ("run directory", escape(s.run_dir)),
        (
            "state",
            f'<span class="state-{s.state}">{s.state}</span>'
            + (f" ({escape(s.stop_reason)})" if s.stop_reason else ""),
        ),
        ("space", escape(s.space)),
        ("strategy", escape(s.strategy)),
        ("estimator", escape(s.estimator)),
        ("objective", escape(", ".join(s.objectives))),
        ("trials", f"{s.trials} ({s.completed} completed, {s.failed} failed, {s.infeasible} infeasible)"),
        (
            "budget used",
            f"{used['trials'][0]} / {used['trials'][1] or '∞'} trials, {used['seconds'][0]:.0f} / {used['seconds'][1] or '∞'} s",
        ),
    ]
    if s.best:
        first = s.best[0]
        items.append(
            ("best", f"trial {first.number}: " + ", ".join(f"{escape(k)} {_num(v)}" for k, v in first.values.items()))
        )
    if s.final:
        items.append(("trained winner", escape(s.final)))
    if s.last_error:
        items.append(("last error", f"trial {s.last_error_trial}: {escape(s.last_error)}"))
    return '<dl class="overview">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _trials_table(s: RunSummary) -> str:
    metric_names = sorted({k for r in s.rows for k in r.metrics})
    head = ["trial", "status", *s.objectives, *metric_names, "seconds", "elapsed", "arch"]
    rows = []
    for r in s.rows:
        css = "failed" if r.status != "complete" else ("infeasible" if not r.feasible else "ok")
        cells = [
            f'<td data-v="{r.number}">{r.number}</td>',
            f"<td>{escape(r.status if r.feasible or r.status != 'complete' else 'infeasible')}</td>",
            *(_cell(r.values.get(n)) for n in s.objectives),
            *(_cell(r.metrics.get(n)) for n in metric_names),
            _cell(r.cost.get("seconds")),
            _cell(r.elapsed),
            f'<td class="arch">{escape(r.arch)}</td>',
        ]
        rows.append(f'<tr class="{css}" data-trial="{r.number}">' + "".join(cells) + "</tr>")
    header = "".join(f"<th{' class=arch' if h == 'arch' else ''}>{escape(h)}</th>" for h in head)
    return f'<table class="sortable trials"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _failed(rows: list[TrialRow]) -> str:
    failed = [r for r in rows if r.status != "complete"]
    if not failed:
        return "<p>none</p>"
    return "".join(
        f'<details class="failed-trial"><summary>trial {r.number}: {escape((r.error or "").strip().splitlines()[-1] if r.error else "failed")}</summary>'
        f"<p><code>{escape(r.arch)}</code></p><pre>{escape(r.error or '')}</pre></details>"
        for r in failed
    )


def render_report(s: RunSummary) -> str:
    """The HTML of the report of ``s`` (a :func:`~nasforge.runner.summary.summarize` with rows)."""
    ok = [r for r in s.rows if r.ok]
    first = s.objectives[0]
    points = [(r.number, r.values[first]) for r in ok]
    best_steps: list[tuple[int, float]] = []
    for r in ok:
        if r.best_so_far is not None and (not best_steps or r.best_so_far != best_steps[-1][1]):
            best_steps.append((r.number, r.best_so_far))
    if ok:
        best_steps.append((ok[-1].number, ok[-1].best_so_far or best_steps[-1][1]))
    sections = [
        f"<h1>nasforge run {escape(s.name)}</h1>",
        "<h2>Overview</h2>",
        _overview(s),
        f"<h2>Best so far ({escape(first)})</h2>",
        progress_chart(points, best_steps, first),
    ]
    if s.multi_objective:
        second = s.objectives[1]
        sections += [
            f"<h2>Pareto front ({escape(first)} against {escape(second)}; {len(s.pareto)} archs)</h2>",
            pareto_chart([(r.number, r.values[first], r.values[second]) for r in ok], s.pareto, first, second),
        ]
    if s.best:
        top = s.best[0]
        sections += [f"<h2>Best arch (trial {top.number})</h2>", arch_drawing(s.arch_objects.get(top.number), top.arch)]
    sections += [
        f"<h2>Failed trials ({s.failed})</h2>",
        _failed(s.rows),
        f"<h2>Trials ({len(s.rows)})</h2>",
        "<p>Click a column's header to sort by it.</p>",
        _trials_table(s),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>nasforge report: {escape(s.name)}</title><style>{CSS}</style></head><body>"
        + "\n".join(sections)
        + f"<script>{SORT_SCRIPT}</script></body></html>\n"
    )
