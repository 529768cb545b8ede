"""nasforge: modular neural architecture search on PyTorch.

Pick a search space, a strategy, an estimator and an objective; the runner joins them in one
ask -> estimate -> score -> tell loop. See ``docs/design.md``.
"""

from __future__ import annotations

from nasforge.core import (
    Arch,
    Choice,
    Context,
    Estimator,
    NasforgeError,
    Objective,
    Result,
    SearchSpace,
    Strategy,
    Trial,
    TrialStatus,
)

__version__ = "0.1.0"

__all__ = [
    "Arch",
    "Choice",
    "Context",
    "Estimator",
    "NasforgeError",
    "Objective",
    "Result",
    "SearchSpace",
    "Strategy",
    "Trial",
    "TrialStatus",
    "__version__",
]
