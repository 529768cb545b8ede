"""Shared test set-up: point nasforge at the benchmark data in ../shared/data when it is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(1)

if SHARED_DATA.is_dir():
    os.environ.setdefault("NASFORGE_DATA_DIR", str(SHARED_DATA))


@pytest.fixture
def shared_data() -> Path:
    """The shared benchmark data folder; tests that need it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own NASFORGE_HOME so user plugins never leak into tests."""
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path_factory.mktemp("nasforge_home")))
