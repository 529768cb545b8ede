"""Core vocabulary: imported by everything, imports nothing else of nasforge."""

from __future__ import annotations

from nasforge.core.arch import Arch, Choice, Value
from nasforge.core.errors import (
    CheckpointError,
    ConfigError,
    DataNotFoundError,
    InvalidArchError,
    NasforgeError,
    SpaceExhaustedError,
    UnknownComponentError,
)
from nasforge.core.estimator import Context, Estimator
from nasforge.core.objective import Constraint, Objective
from nasforge.core.seeding import derive_seed, seed_everything
from nasforge.core.space import SearchSpace
from nasforge.core.strategy import Strategy
from nasforge.core.trial import Result, Trial, TrialStatus

__all__ = [
    "Arch",
    "Choice",
    "Value",
    "CheckpointError",
    "ConfigError",
    "DataNotFoundError",
    "InvalidArchError",
    "NasforgeError",
    "SpaceExhaustedError",
    "UnknownComponentError",
    "Context",
    "Estimator",
    "Constraint",
    "Objective",
    "derive_seed",
    "seed_everything",
    "SearchSpace",
    "Strategy",
    "Result",
    "Trial",
    "TrialStatus",
]
