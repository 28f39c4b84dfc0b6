"""Realized measures: closed forms on hand-built bars and unbiasedness on Brownian paths."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from features.realized import (
    daily_realized_measures,
    garman_klass,
    parkinson,
    rogers_satchell,
    yang_zhang,
)

BarsFactory = Callable[..., pd.DataFrame]
A = 0.01  # hourly log return magnitude in the hand-built days


def zigzag(days: int, a: float = A, p0: float = 100.0) -> np.ndarray:
    """Closes whose hourly log returns alternate +a, -a (first close = p0·e^a)."""
    signs = np.where(np.arange(24 * days) % 2 == 0, 1.0, -1.0)
    return p0 * np.exp(np.cumsum(signs * a))


def test_range_estimators_closed_form() -> None:
    h, lo = np.array([110.0]), np.array([90.0])
    o = c = np.array([100.0])
    hl2 = math.log(110 / 90) ** 2
    assert parkinson(h, lo)[0] == pytest.approx(hl2 / (4 * math.log(2)), rel=1e-14)
    assert garman_klass(o, h, lo, c)[0] == pytest.approx(0.5 * hl2, rel=1e-14)
    rs = math.log(1.1) ** 2 + math.log(0.9) ** 2
    assert rogers_satchell(o, h, lo, c)[0] == pytest.approx(rs, rel=1e-14)
    # A bar that only goes up (open = low, close = high) has RS = 0 whatever its size.
    assert rogers_satchell(np.array([100.0]), h, np.array([100.0]), h)[0] == 0.0
    # GK with a close move: ½(ln H/L)² − (2 ln 2 − 1)(ln C/O)².
    gk = 0.5 * hl2 - (2 * math.log(2) - 1) * math.log(105 / 100) ** 2
    assert garman_klass(o, h, lo, np.array([105.0]))[0] == pytest.approx(gk, rel=1e-14)


def test_intraday_measures_on_zigzag_day(make_bars: BarsFactory) -> None:
    closes = zigzag(3)
    daily = daily_realized_measures(make_bars(closes, first_open=100.0))
    day = daily.iloc[1]  # a full day: all 24 returns and 24 adjacent pairs are available
    assert day["n_hours"] == 24
    assert not day["incomplete"]
    assert day["rv"] == pytest.approx(24 * A**2, rel=1e-9)
    assert day["rsv_pos"] == pytest.approx(12 * A**2, rel=1e-9)
    assert day["rsv_neg"] == pytest.approx(12 * A**2, rel=1e-9)
    assert day["bipower"] == pytest.approx(math.pi / 2 * 24 * A**2, rel=1e-9)
    assert day["rq"] == pytest.approx(24 / 3 * 24 * A**4, rel=1e-9)
    # The day opens on the previous close and alternates: close = open, high/low ± a.
    assert day["open"] == pytest.approx(day["close"])
    assert day["ret"] == pytest.approx(0.0, abs=1e-12)
    assert day["parkinson"] == pytest.approx(A**2 / (4 * math.log(2)), rel=1e-9)
    # First day: the first bar has no previous close, 23 returns, scaled to 24 hours.
    first = daily.iloc[0]
    assert first["n_hours"] == 23
    assert first["incomplete"]
    assert first["rv"] == pytest.approx(24 * A**2, rel=1e-9)


def test_missing_hour_is_skipped_and_scaled(make_bars: BarsFactory) -> None:
    closes = zigzag(2) * np.exp(np.r_[np.zeros(30), 0.05 * np.ones(18)])  # 0.05 jump at bar 30
    full = daily_realized_measures(make_bars(closes))
    gappy = daily_realized_measures(make_bars(closes, drop=[30]))
    day = gappy.iloc[1]
    # Bar 30 (06:00 of day 2) is missing: its own return and the one across the gap are lost.
    assert day["n_hours"] == 22
    assert day["incomplete"]
    assert day["rv"] == pytest.approx(24 / 22 * 22 * A**2, rel=1e-9)  # the jump is not seen
    assert full.iloc[1]["rv"] > day["rv"]
    # Daily OHLC still come from the bars that exist.
    assert day["close"] == full.iloc[1]["close"]


def test_too_few_hours_gives_nan_and_empty_days_are_rows(make_bars: BarsFactory) -> None:
    closes = zigzag(3)
    removed = list(range(34, 48))  # day 2 keeps bars 00:00-09:00: 10 returns
    bars = make_bars(closes).drop(make_bars(closes).index[removed])
    daily = daily_realized_measures(bars, min_hours=12)
    assert daily.iloc[1]["n_hours"] == 10
    assert np.isnan(daily.iloc[1]["rv"]) and np.isnan(daily.iloc[1]["parkinson"])
    # Drop a whole day: it stays as a row (calendar index) with n_hours = 0 and NaN values.
    no_day2 = make_bars(closes).drop(make_bars(closes).index[24:48])
    daily2 = daily_realized_measures(no_day2)
    assert len(daily2) == 3
    assert daily2.iloc[1]["n_hours"] == 0 and np.isnan(daily2.iloc[1]["close"])
    assert np.isnan(daily2.iloc[2]["ret"])  # no previous close
    assert daily2.index.tz is not None and daily2.index.name == "date"


def test_unsorted_or_duplicate_bars_are_rejected(make_bars: BarsFactory) -> None:
    bars = make_bars(zigzag(1))
    with pytest.raises(ValueError, match="sorted by timestamp without duplicates"):
        daily_realized_measures(bars.iloc[::-1])
    with pytest.raises(ValueError, match="sorted by timestamp without duplicates"):
        daily_realized_measures(pd.concat([bars, bars.iloc[-1:]]))


def test_yang_zhang_constant_days() -> None:
    # Identical days with open = previous close: overnight and open-close variances are 0,
    # so YZ = (1 - k) · RS with k = 0.34 / (1.34 + (n+1)/(n-1)).
    n = 5
    daily = pd.DataFrame(
        {"open": 100.0, "high": 110.0, "low": 90.0, "close": 100.0},
        index=pd.date_range("2024-01-01", periods=8, freq="D", tz="UTC"),
    )
    yz = yang_zhang(daily, window=n)
    k = 0.34 / (1.34 + (n + 1) / (n - 1))
    rs = math.log(1.1) ** 2 + math.log(0.9) ** 2
    assert yz.iloc[: n - 1].isna().all()
    np.testing.assert_allclose(yz.iloc[n:], (1 - k) * rs, rtol=1e-12)


@pytest.fixture(scope="module")
def brownian_daily() -> tuple[pd.DataFrame, float]:
    """Daily measures from a seeded driftless Brownian log price sampled every minute.

    4000 days of 1440 one-minute steps, daily variance 4e-4 (2 % daily volatility).
    """
    rng = np.random.default_rng(20240101)
    days, steps, sigma2 = 4000, 1440, 4e-4
    incr = rng.standard_normal((days * 24, 60)) * math.sqrt(sigma2 / steps)
    path = np.cumsum(incr, axis=1)  # within each hour, relative to the hour's open
    level = np.r_[0.0, np.cumsum(path[:-1, -1])]  # log price at each hour's open
    log_open = level
    log_close = level + path[:, -1]
    log_high = level + np.maximum(path.max(axis=1), 0.0)
    log_low = level + np.minimum(path.min(axis=1), 0.0)
    bars = pd.DataFrame(
        {
            "open": np.exp(log_open),
            "high": np.exp(log_high),
            "low": np.exp(log_low),
            "close": np.exp(log_close),
        },
        index=pd.date_range("2000-01-01", periods=days * 24, freq="1h", tz="UTC"),
    )
    return daily_realized_measures(bars).iloc[1:], sigma2


# Tolerances: Monte Carlo standard errors of the mean over 4000 days are about 0.45 % (RV,
# var = 2σ⁴/24), 0.5 % (bipower), 1.0 % (Parkinson, var ≈ 0.41σ⁴), 0.8 % (GK) and 0.9 % (RS).
# The range estimators are also biased down because the extremes are monitored only every
# minute: the discrete maximum falls short of the continuous one by ≈ 0.5826 σ √Δt
# (Broadie, Glasserman & Kou 1997), i.e. ≈ 2 % of the range and 3-5 % of its square at
# 1440 steps a day. Measured at this seed: RV −0.1 %, BV −0.4 %, Parkinson −2.8 %,
# GK −4.8 %, RS −4.7 %. Bounds: ≈ 3 standard errors around 0 (intraday sums) or around the
# discretisation bias (ranges), never wide enough to pass a wrong scaling constant
# (e.g. Parkinson without 4 ln 2 is off by 64 %, bipower without π/2 by 36 %).
@pytest.mark.parametrize(
    ("column", "low", "high"),
    [
        ("rv", -0.015, 0.015),
        ("bipower", -0.02, 0.02),
        ("parkinson", -0.06, 0.01),
        ("garman_klass", -0.08, -0.02),
        ("rogers_satchell", -0.08, -0.02),
    ],
)
def test_estimators_unbiased_on_brownian_paths(
    brownian_daily: tuple[pd.DataFrame, float], column: str, low: float, high: float
) -> None:
    daily, sigma2 = brownian_daily
    ratio = daily[column].mean() / sigma2 - 1.0
    assert low < ratio < high, f"{column}: mean / true variance - 1 = {ratio:.4f}"


def test_semivariances_and_quarticity_on_brownian_paths(
    brownian_daily: tuple[pd.DataFrame, float],
) -> None:
    daily, sigma2 = brownian_daily
    # Each semivariance carries half the variance; RQ estimates σ⁴ (SE ≈ 1.5 %: var(r⁴)=96σ⁸).
    assert daily["rsv_pos"].mean() / sigma2 == pytest.approx(0.5, abs=0.01)
    assert daily["rsv_neg"].mean() / sigma2 == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(daily["rsv_pos"] + daily["rsv_neg"], daily["rv"], rtol=1e-12)
    assert daily["rq"].mean() / sigma2**2 == pytest.approx(1.0, abs=0.06)
    # Estimator efficiency ordering under Brownian motion: GK beats Parkinson beats daily ret².
    rel_sd = {c: daily[c].std() / daily[c].mean() for c in ("parkinson", "garman_klass")}
    assert rel_sd["garman_klass"] < rel_sd["parkinson"] < (daily["ret"] ** 2).std() / sigma2
