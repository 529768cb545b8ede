"""What the conformance suites (:mod:`nasforge.testing.suites`) and the strategy contract
(:mod:`nasforge.testing.conformance`) share: the data context, the tiny spaces, state comparison."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from nasforge.core import registry
from nasforge.core.space import SearchSpace

__all__ = ["CONTEXT", "make_space", "same_state"]

#: What the runner would take from the data: 1x8x8 images in 10 classes (``digits``).
CONTEXT: dict[str, Any] = {"in_channels": 1, "num_classes": 10, "input_size": (8, 8)}


def make_space(spec: Mapping[str, Any]) -> SearchSpace:
    return registry.create_inner("space", spec, context=CONTEXT, where="conformance space")


def same_state(a: Any, b: Any) -> bool:
    """Whether two state dicts hold the same values (tensors and arrays compared exactly)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    try:
        return bool(a == b)
    except Exception:  # an object without a usable ==: its type must match at least
        return type(a) is type(b)
