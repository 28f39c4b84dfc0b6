"""Daily realized measures from hourly bars (all variances in decimal per day).

For each UTC day the hourly bars stamped within it give:

* daily OHLC (first open, max high, min low, last close) and summed ``volume``;
* ``ret``: close-to-close log return from the previous calendar day's close;
* ``rv``: realized variance, the sum of squared hourly close-to-close log returns. A return is
  used only between two consecutive hourly bars: returns across a missing hour are skipped,
  ``n_hours`` counts the returns used, and the sum is scaled by ``24 / n_hours``;
* ``bipower`` (π/2 Σ|r_i||r_{i-1}| over adjacent pairs of used returns), ``rsv_pos`` /
  ``rsv_neg`` (Σ r² over positive / negative returns) and ``rq`` (realized quarticity,
  N/3 Σ r⁴ with N = 24 intervals a day, an estimate of ∫σ⁴ in (decimal variance per day)²),
  scaled the same way as ``rv``;
* range estimators from the day's OHLC: ``parkinson``, ``garman_klass``, ``rogers_satchell``
  and ``yang_zhang`` (the latter over a trailing window of days).

Days with fewer than ``MIN_HOURS`` usable returns have every intraday measure set to NaN (and
days with fewer than ``MIN_HOURS`` bars have NaN range estimators);
``incomplete`` is true whenever any of the 24 returns is missing. The daily frame covers every
calendar day from the first to the last bar (days without bars are rows of NaN with
``n_hours = 0``), so rolling windows count calendar days.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: Hourly returns in a complete UTC day.
HOURS_PER_DAY = 24
#: Fewest usable hourly returns for the intraday measures of a day (else NaN).
MIN_HOURS = 12
#: Trailing window (days) of the Yang-Zhang estimator.
YZ_WINDOW = 7

_HOUR_NS = pd.Timedelta(hours=1).value
_DAY_NS = pd.Timedelta(days=1).value

COLUMNS: tuple[str, ...] = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "ret",
    "rv",
    "n_hours",
    "incomplete",
    "parkinson",
    "garman_klass",
    "rogers_satchell",
    "yang_zhang",
    "bipower",
    "rsv_pos",
    "rsv_neg",
    "rq",
)


def parkinson(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Parkinson (1980) variance: (ln H/L)² / (4 ln 2), per bar period (decimal)."""
    hl = np.log(high / low)
    return hl**2 / (4.0 * math.log(2.0))


def garman_klass(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray
) -> np.ndarray:
    """Garman-Klass (1980) variance: ½(ln H/L)² − (2 ln 2 − 1)(ln C/O)² (decimal, per bar)."""
    hl = np.log(high / low)
    co = np.log(close / open_)
    return 0.5 * hl**2 - (2.0 * math.log(2.0) - 1.0) * co**2


def rogers_satchell(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray
) -> np.ndarray:
    """Rogers-Satchell (1991) variance: ln(H/C)ln(H/O) + ln(L/C)ln(L/O) (decimal, per bar)."""
    return np.log(high / close) * np.log(high / open_) + np.log(low / close) * np.log(low / open_)


def yang_zhang(daily: pd.DataFrame, window: int = YZ_WINDOW) -> pd.Series:
    """Yang-Zhang (2000) variance per day over a trailing window of ``window`` days.

    σ²_YZ = σ²_overnight + k σ²_open-close + (1 − k) mean(RS), k = 0.34 / (1.34 + (n+1)/(n−1)),
    with σ² the sample variances (n − 1) of ln(O_t/C_{t−1}) and ln(C_t/O_t) over the window.
    For 24/7 crypto the "overnight" return (day open vs previous day close) is ~0 by
    construction, so the estimator sits between Rogers-Satchell and the open-close variance.
    Uses only days up to and including t; NaN until ``window`` valid days are available.
    """
    n = window
    k = 0.34 / (1.34 + (n + 1) / (n - 1))
    overnight = np.log(daily["open"] / daily["close"].shift(1))
    open_close = np.log(daily["close"] / daily["open"])
    rs = pd.Series(
        rogers_satchell(
            daily["open"].to_numpy(),
            daily["high"].to_numpy(),
            daily["low"].to_numpy(),
            daily["close"].to_numpy(),
        ),
        index=daily.index,
    )
    var_o = overnight.rolling(n, min_periods=n).var(ddof=1)
    var_c = open_close.rolling(n, min_periods=n).var(ddof=1)
    mean_rs = rs.rolling(n, min_periods=n).mean()
    return var_o + k * var_c + (1.0 - k) * mean_rs


def hourly_returns(hourly: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Hourly close-to-close log returns and whether each is usable.

    Returns
    -------
    (returns, usable):
        ``returns[i]`` = ln(close_i / close_{i−1}) for bar i (``returns[0]`` = NaN); usable
        only when bar i−1 is exactly one hour before bar i.
    """
    close = hourly["close"].to_numpy(dtype=float)
    if not isinstance(hourly.index, pd.DatetimeIndex):
        raise TypeError("hourly bars must be indexed by a DatetimeIndex")
    stamps = hourly.index.as_unit("ns").asi8
    ret = np.full(close.shape, np.nan)
    usable = np.zeros(close.shape, dtype=bool)
    if close.size > 1:
        ret[1:] = np.diff(np.log(close))
        usable[1:] = np.diff(stamps) == _HOUR_NS
    ret[~usable] = np.nan
    return ret, usable


def daily_realized_measures(
    hourly: pd.DataFrame, *, min_hours: int = MIN_HOURS, yz_window: int = YZ_WINDOW
) -> pd.DataFrame:
    """Realized measures per UTC day from hourly OHLCV bars.

    Parameters
    ----------
    hourly:
        Bars indexed by UTC bar-open ``timestamp`` with ``open, high, low, close`` and
        optionally ``volume`` (gaps allowed, no duplicates).
    min_hours:
        Fewest usable hourly returns for the intraday measures of a day.
    yz_window:
        Trailing window (days) of the Yang-Zhang estimator.

    Returns
    -------
    DataFrame
        Indexed by ``date`` (UTC midnight, every calendar day from first to last bar) with
        the columns in :data:`COLUMNS`. ``ret`` is a decimal log return; ``rv``,
        ``parkinson``, ``garman_klass``, ``rogers_satchell``, ``yang_zhang``, ``bipower``,
        ``rsv_pos`` and ``rsv_neg`` are decimal variances per day; ``rq`` is in (decimal
        variance per day)²; ``n_hours`` counts the usable hourly returns (0-24).
    """
    if hourly.empty:
        empty = pd.DataFrame(columns=list(COLUMNS), dtype=float)
        empty.index = pd.DatetimeIndex([], tz="UTC", name="date")
        return empty
    index = pd.DatetimeIndex(hourly.index).as_unit("ns")
    if index.tz is None:
        index = index.tz_localize("UTC")
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise ValueError("hourly bars must be sorted by timestamp without duplicates")
    stamps = index.asi8
    day_ns = (stamps // _DAY_NS) * _DAY_NS
    first_day, last_day = day_ns[0], day_ns[-1]
    n_days = int((last_day - first_day) // _DAY_NS) + 1
    day = ((day_ns - first_day) // _DAY_NS).astype(np.int64)
    dates = pd.DatetimeIndex(
        pd.to_datetime(first_day + np.arange(n_days, dtype=np.int64) * _DAY_NS, utc=True),
        name="date",
    ).as_unit("ns")

    o = hourly["open"].to_numpy(dtype=float)
    h = hourly["high"].to_numpy(dtype=float)
    lo = hourly["low"].to_numpy(dtype=float)
    c = hourly["close"].to_numpy(dtype=float)
    vol = (
        hourly["volume"].to_numpy(dtype=float)
        if "volume" in hourly.columns
        else np.full(c.shape, np.nan)
    )

    n_bars = np.bincount(day, minlength=n_days)
    has_bar = n_bars > 0
    # Bars are sorted, so the first/last bar of each day are at the group boundaries.
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    ends = np.r_[starts[1:], day.size] - 1
    d_open = np.full(n_days, np.nan)
    d_close = np.full(n_days, np.nan)
    d_open[day[starts]] = o[starts]
    d_close[day[ends]] = c[ends]
    # Contiguous day groups: reduceat over the group starts gives each day's extremes.
    d_high = np.full(n_days, np.nan)
    d_low = np.full(n_days, np.nan)
    d_high[day[starts]] = np.maximum.reduceat(h, starts)
    d_low[day[starts]] = np.minimum.reduceat(lo, starts)
    d_volume = np.bincount(day, weights=vol, minlength=n_days)
    d_volume[~has_bar] = np.nan

    r, usable = hourly_returns(pd.DataFrame({"close": c}, index=index))
    r0 = np.where(usable, r, 0.0)
    n_hours = np.bincount(day, weights=usable.astype(float), minlength=n_days)
    sum_r2 = np.bincount(day, weights=r0**2, minlength=n_days)
    sum_pos = np.bincount(day, weights=np.where(r0 > 0, r0**2, 0.0), minlength=n_days)
    sum_neg = np.bincount(day, weights=np.where(r0 < 0, r0**2, 0.0), minlength=n_days)
    sum_r4 = np.bincount(day, weights=r0**4, minlength=n_days)
    # Bipower pairs: return i and return i-1 both usable (the pair may start the previous day).
    pair = np.zeros_like(usable)
    pair[1:] = usable[1:] & usable[:-1]
    abs_prod = np.zeros_like(r0)
    abs_prod[1:] = np.abs(r0[1:]) * np.abs(r0[:-1])
    n_pairs = np.bincount(day, weights=pair.astype(float), minlength=n_days)
    sum_bp = np.bincount(day, weights=np.where(pair, abs_prod, 0.0), minlength=n_days)

    enough = n_hours >= min_hours
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(enough, HOURS_PER_DAY / n_hours, np.nan)
        rv = sum_r2 * scale
        rsv_pos = sum_pos * scale
        rsv_neg = sum_neg * scale
        rq = (HOURS_PER_DAY / 3.0) * sum_r4 * scale
        bp_scale = np.where(enough & (n_pairs > 0), HOURS_PER_DAY / n_pairs, np.nan)
        bipower = (math.pi / 2.0) * sum_bp * bp_scale

    prev_close = np.r_[np.nan, d_close[:-1]]
    # A range from a fraction of the day understates the day's variance: NaN below min_hours.
    ranged = n_bars >= min_hours
    out = pd.DataFrame(
        {
            "open": d_open,
            "high": d_high,
            "low": d_low,
            "close": d_close,
            "volume": d_volume,
            "ret": np.log(d_close / prev_close),
            "rv": rv,
            "n_hours": n_hours.astype(np.int64),
            "incomplete": n_hours < HOURS_PER_DAY,
            "parkinson": np.where(ranged, parkinson(d_high, d_low), np.nan),
            "garman_klass": np.where(ranged, garman_klass(d_open, d_high, d_low, d_close), np.nan),
            "rogers_satchell": np.where(
                ranged, rogers_satchell(d_open, d_high, d_low, d_close), np.nan
            ),
            "yang_zhang": np.nan,
            "bipower": bipower,
            "rsv_pos": rsv_pos,
            "rsv_neg": rsv_neg,
            "rq": rq,
        },
        index=dates,
    )
    out["yang_zhang"] = yang_zhang(out, yz_window)
    return out[list(COLUMNS)]
