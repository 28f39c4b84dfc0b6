"""Shared test fixtures: where the real market data and conformance vectors live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XMARGIN_SHARED", PROJECT_ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_CONFORMANCE = SHARED / "conformance"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real market-history mirror (``../shared/data``); skip when it is absent."""
    if not (SHARED_DATA / "binance_spot_1h").is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """Published margin test vectors (``../shared/conformance``); skip when absent."""
    if not SHARED_CONFORMANCE.is_dir():
        pytest.skip(f"conformance vectors not found at {SHARED_CONFORMANCE}")
    return SHARED_CONFORMANCE
