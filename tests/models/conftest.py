"""Fixtures of the models tests (simulated panels; the real data fixture is shared)."""

from __future__ import annotations

import pandas as pd
import pytest
from vol_sim import simulate_panel


@pytest.fixture(scope="session")
def sim_panel() -> pd.DataFrame:
    """Two symbols, 700 simulated days each."""
    return simulate_panel()
