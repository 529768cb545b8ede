"""Argument types of the command line that check a value's range as it is parsed.

A bad value raises :class:`~nasforge.core.errors.ConfigError` naming the option, the value and
what is allowed, which :func:`nasforge.cli.main` prints as one line with exit status 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from nasforge.core.errors import ConfigError

__all__ = ["whole_number"]


def whole_number(flag: str, minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for ``flag``: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{flag} must be a whole number ≥ {minimum}, got {text!r}") from None
        if value < minimum:
            raise ConfigError(f"{flag} must be ≥ {minimum}, got {value}")
        return value

    parse.__name__ = f"{flag} value"
    return parse


def yaml_mapping(flag: str, text: str | None) -> dict[str, Any]:
    """The YAML mapping an option such as ``--space-options`` holds (none: empty)."""
    try:
        value = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{flag} {text!r} is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a YAML mapping such as '{{C: 8, N: 1}}', got {text!r}")
    return value
