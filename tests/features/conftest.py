"""Helpers shared by the market-history tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest


def hourly_bars(
    closes: np.ndarray,
    start: str = "2024-01-01",
    *,
    first_open: float | None = None,
    drop: list[int] | None = None,
) -> pd.DataFrame:
    """Hourly bars whose open is the previous close and whose high/low bracket open/close."""
    closes = np.asarray(closes, dtype=float)
    opens = np.r_[closes[0] if first_open is None else first_open, closes[:-1]]
    index = pd.date_range(start, periods=closes.size, freq="1h", tz="UTC", name="timestamp")
    frame = pd.DataFrame(
        {
            "open": opens,
            "high": np.maximum(opens, closes),
            "low": np.minimum(opens, closes),
            "close": closes,
            "volume": np.ones(closes.size),
        },
        index=index,
    )
    if drop:
        frame = frame.drop(frame.index[drop])
    return frame


BarsFactory = Callable[..., pd.DataFrame]


@pytest.fixture
def make_bars() -> BarsFactory:
    """The :func:`hourly_bars` factory."""
    return hourly_bars
