"""User-facing errors.

Every mistake a user can make (bad config, unknown component, arch that does not fit the space,
missing data file, corrupt checkpoint) raises a subclass of :class:`NasforgeError`. The CLI turns
these into a one-paragraph message and exit status 2, never a traceback.
"""

from __future__ import annotations

__all__ = [
    "NasforgeError",
    "ConfigError",
    "UnknownComponentError",
    "InvalidArchError",
    "DataNotFoundError",
    "CheckpointError",
    "SpaceExhaustedError",
]


class NasforgeError(Exception):
    """Base of every error caused by user input rather than by a bug."""


class ConfigError(NasforgeError):
    """A configuration file or value is malformed, unknown or out of range."""


class UnknownComponentError(ConfigError):
    """A component type name is not registered; the message lists the registered ones."""


class InvalidArchError(NasforgeError, ValueError):
    """An architecture does not fit its search space; the message names the bad part."""


class DataNotFoundError(NasforgeError, FileNotFoundError):
    """A data file is missing; the message names it and says how to get it."""


class CheckpointError(NasforgeError):
    """A checkpoint or run directory is corrupt, truncated or inconsistent."""


class SpaceExhaustedError(NasforgeError):
    """More distinct architectures were requested than the search space holds."""
