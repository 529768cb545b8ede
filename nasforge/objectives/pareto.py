"""Pareto dominance, fronts and hypervolume for multi-objective search (all scores maximised)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["dominates", "non_dominated", "non_dominated_sort", "hypervolume_2d"]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and better somewhere (maximising)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def non_dominated(values: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (the first Pareto front)."""
    points = np.asarray(values, dtype=float)
    if points.size == 0:
        return []
    keep = []
    for i, p in enumerate(points):
        dominated = np.any(np.all(points >= p, axis=1) & np.any(points > p, axis=1))
        if not dominated:
            keep.append(i)
    return keep


def non_dominated_sort(values: Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices grouped into successive Pareto fronts (front 0 is non-dominated)."""
    remaining = list(range(len(values)))
    fronts: list[list[int]] = []
    while remaining:
        front = [remaining[i] for i in non_dominated([values[j] for j in remaining])]
        fronts.append(front)
        taken = set(front)
        remaining = [i for i in remaining if i not in taken]
    return fronts


def hypervolume_2d(values: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Area dominated by 2-D points (maximised) and bounded below by ``reference``."""
    points = [tuple(p) for p in values if p[0] > reference[0] and p[1] > reference[1]]
    if not points:
        return 0.0
    front = sorted((points[i] for i in non_dominated(points)), key=lambda p: -p[0])
    area, previous_y = 0.0, reference[1]
    for x, y in front:
        area += (x - reference[0]) * (y - previous_y)
        previous_y = y
    return area
