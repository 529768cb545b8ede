"""Charts as inline SVG text (no library, no network): what the report and the dashboard draw.

Each point is a ``<circle>`` with a class (``pt``; ``front`` for Pareto points) and a ``<title>``
(its tooltip), so tests and browsers can count and read them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["progress_chart", "pareto_chart"]

_W, _H = 640, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 44


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * step:
            step *= mult
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _span(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(lo) * 0.05 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _label(value: float) -> str:
    return f"{value:.4g}"


class _Frame:
    """Axes mapping data to pixels, with ticks and labels."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], x_label: str, y_label: str) -> None:
        self.x0, self.x1 = _span(xs)
        self.y0, self.y1 = _span(ys)
        self.x_label, self.y_label = x_label, y_label

    def x(self, value: float) -> float:
        return _LEFT + (value - self.x0) / (self.x1 - self.x0) * (_W - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        return _H - _BOTTOM - (value - self.y0) / (self.y1 - self.y0) * (_H - _TOP - _BOTTOM)

    def axes(self) -> list[str]:
        parts = [
            f'<line class="axis" x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - _RIGHT}" y2="{_H - _BOTTOM}"/>',
            f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_H - _BOTTOM}"/>',
        ]
        for t in _ticks(self.x0, self.x1):
            parts.append(
                f'<text class="tick" x="{self.x(t):.1f}" y="{_H - _BOTTOM + 14}" text-anchor="middle">{_label(t)}</text>'
            )
        for t in _ticks(self.y0, self.y1):
            y = self.y(t)
            parts.append(f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}"/>')
            parts.append(f'<text class="tick" x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_label(t)}</text>')
        parts.append(
            f'<text class="label" x="{(_LEFT + _W - _RIGHT) / 2}" y="{_H - 6}" text-anchor="middle">{escape(self.x_label)}</text>'
        )
        parts.append(
            f'<text class="label" x="14" y="{(_TOP + _H - _BOTTOM) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {(_TOP + _H - _BOTTOM) / 2})">{escape(self.y_label)}</text>'
        )
        return parts


def _svg(body: list[str], title: str, css_class: str) -> str:
    return (
        f'<svg class="{css_class}" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" aria-label="{escape(title)}">'
        + "".join(body)
        + "</svg>"
    )


def progress_chart(points: Sequence[tuple[int, float]], best: Sequence[tuple[int, float]], y_label: str) -> str:
    """Each completed trial's first score (``points``: trial number, value) as a dot, and the
    best so far (``best``) as a step line."""
    if not points:
        return '<p class="empty">no completed trial yet</p>'
    frame = _Frame([p[0] for p in points], [p[1] for p in points], "trial", y_label)
    body = frame.axes()
    if best:
        coords: list[str] = []
        previous_y: float | None = None
        for number, value in best:
            if previous_y is not None:
                coords.append(f"{frame.x(number):.1f},{previous_y:.1f}")
            previous_y = frame.y(value)
            coords.append(f"{frame.x(number):.1f},{previous_y:.1f}")
        body.append(f'<polyline class="best" points="{" ".join(coords)}"/>')
    for number, value in points:
        body.append(
            f'<circle class="pt" data-trial="{number}" cx="{frame.x(number):.1f}" cy="{frame.y(value):.1f}" r="3">'
            f"<title>trial {number}: {_label(value)}</title></circle>"
        )
    return _svg(body, f"{y_label} per trial, best so far", "chart progress")


def pareto_chart(points: Sequence[tuple[int, float, float]], front: Sequence[int], x_label: str, y_label: str) -> str:
    """Trials by their first two scores (``points``: number, x, y), the Pareto front's points
    (``front``: trial numbers) marked and joined."""
    if not points:
        return '<p class="empty">no completed trial yet</p>'
    frame = _Frame([p[1] for p in points], [p[2] for p in points], x_label, y_label)
    body = frame.axes()
    on_front = set(front)
    line = sorted((p for p in points if p[0] in on_front), key=lambda p: p[1])
    if len(line) > 1:
        body.append(
            '<polyline class="front-line" points="'
            + " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for _, x, y in line)
            + '"/>'
        )
    for number, x, y in points:
        kind = "pt front" if number in on_front else "pt"
        body.append(
            f'<circle class="{kind}" data-trial="{number}" cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="{4 if number in on_front else 3}">'
            f"<title>trial {number}: {escape(x_label)} {_label(x)}, {escape(y_label)} {_label(y)}</title></circle>"
        )
    return _svg(body, f"{y_label} against {x_label}", "chart pareto")
