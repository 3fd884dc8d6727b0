"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The datasets bundled with mlpot (data/ in the repository).
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def data_dir() -> Path:
    """Return the folder of the bundled datasets."""
    return DATA_DIR
