"""Every registered strategy passes the shared contract, just by being registered."""

from __future__ import annotations

import pytest

from nasforge.core import registry
from nasforge.testing.conformance import check_strategy

STRATEGIES = registry.names("strategy")


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_conformance(name: str) -> None:
    check_strategy(name)


def test_core_strategies_are_registered() -> None:
    assert {"random", "evolution", "grid"} <= set(STRATEGIES)
