"""Invariants of the realized measures on arbitrary valid bars (hypothesis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from features.realized import daily_realized_measures

VARIANCES = ("rv", "parkinson", "garman_klass", "rogers_satchell", "bipower", "rsv_pos", "rsv_neg")


def bars_from(moves: np.ndarray, wicks: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    close = 100.0 * np.exp(np.cumsum(moves))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * np.exp(wicks[:, 0])
    low = np.minimum(open_, close) * np.exp(-wicks[:, 1])
    index = pd.date_range("2024-03-01", periods=moves.size, freq="1h", tz="UTC")
    frame = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": 1.0}, index=index
    )
    return frame[keep]


bar_inputs = st.integers(min_value=30, max_value=24 * 5).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, n, elements=st.floats(-0.05, 0.05)),
        arrays(np.float64, (n, 2), elements=st.floats(0.0, 0.03)),
        arrays(np.bool_, n, elements=st.sampled_from([True, True, True, False])),
    )
)


@settings(max_examples=30, deadline=None)
@given(bar_inputs, st.floats(0.01, 1000.0))
def test_invariants(data: tuple[np.ndarray, ...], scale: float) -> None:
    moves, wicks, keep = data
    keep = np.r_[True, keep[1:]]  # some hours are missing, never the first
    bars = bars_from(moves, wicks, keep)
    daily = daily_realized_measures(bars)
    # Non-negative variances; semivariances add up to RV; counts bounded by 24.
    for column in VARIANCES:
        values = daily[column].dropna()
        assert (values >= -1e-15).all(), column
    both = daily[["rv", "rsv_pos", "rsv_neg"]].dropna()
    np.testing.assert_allclose(both["rsv_pos"] + both["rsv_neg"], both["rv"], rtol=1e-10)
    assert daily["n_hours"].between(0, 24).all()
    assert (daily["incomplete"] == (daily["n_hours"] < 24)).all()
    # Daily OHLC bracket: low <= open, close <= high.
    ohlc = daily[["open", "high", "low", "close"]].dropna()
    assert (ohlc["low"] <= ohlc[["open", "close"]].min(axis=1)).all()
    assert (ohlc["high"] >= ohlc[["open", "close"]].max(axis=1)).all()
    # Prices in another currency unit give the same variances (log returns are scale-free).
    scaled = bars.copy()
    scaled[["open", "high", "low", "close"]] *= scale
    again = daily_realized_measures(scaled)
    for column in (*VARIANCES, "rq", "ret", "yang_zhang"):
        np.testing.assert_allclose(again[column], daily[column], rtol=1e-7, atol=1e-14)
    # Adding bars after the last day never changes earlier days (no look-ahead).
    cut = bars.index[0].normalize() + pd.Timedelta(days=1)
    head = daily_realized_measures(bars[bars.index < cut])
    pd.testing.assert_frame_equal(head, daily.loc[head.index], check_freq=False)
