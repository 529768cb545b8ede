"""Every registered component of every kind passes its kind's conformance suite, just by being
registered (``nasforge.testing.suites``); strategies have their own file."""

from __future__ import annotations

import pytest

from nasforge.core import registry
from nasforge.testing import suites

CASES = [
    pytest.param(reg.kind, reg.name, id=f"{reg.kind}-{reg.name}")
    for reg in registry.registrations()
    if reg.kind != "strategy"  # tests/test_strategy_conformance.py
]


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_conformance(kind: str, name: str) -> None:
    suites.check(kind, name)


def test_every_kind_has_a_check() -> None:
    assert set(registry.KINDS) <= set(suites.CHECKS)
