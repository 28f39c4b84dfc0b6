"""Forecast losses on variance (Patton 2011 robust family) and Mincer-Zarnowitz R².

All functions take realized and forecast **variances of the same horizon** (decimal);
rows where either is missing or not positive are dropped by :func:`valid_pairs`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def valid_pairs(realized: ArrayLike, forecast: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    """Return the (realized, forecast) pairs where both are finite and strictly positive."""
    y = np.asarray(realized, dtype=float)
    f = np.asarray(forecast, dtype=float)
    ok = np.isfinite(y) & np.isfinite(f) & (y > 0) & (f > 0)
    return y[ok], f[ok]


def qlike_loss(realized: ArrayLike, forecast: ArrayLike) -> NDArray[np.float64]:
    """Per-observation QLIKE: ``y/f - log(y/f) - 1`` (0 at a perfect forecast).

    Robust to noise in the variance proxy (Patton 2011) and penalises under-prediction more
    than over-prediction, the right asymmetry for margin. NaN where an input is missing.
    """
    y = np.asarray(realized, dtype=float)
    f = np.asarray(forecast, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = y / f
        out = ratio - np.log(ratio) - 1.0
    return np.where(np.isfinite(out) & (y > 0) & (f > 0), out, np.nan)


def mse_loss(realized: ArrayLike, forecast: ArrayLike) -> NDArray[np.float64]:
    """Per-observation squared error on the variance (decimal² units)."""
    y = np.asarray(realized, dtype=float)
    f = np.asarray(forecast, dtype=float)
    return (y - f) ** 2


def qlike(realized: ArrayLike, forecast: ArrayLike) -> float:
    """Mean QLIKE over valid pairs (NaN when there are none)."""
    y, f = valid_pairs(realized, forecast)
    return float(np.mean(qlike_loss(y, f))) if y.size else float("nan")


def mse(realized: ArrayLike, forecast: ArrayLike) -> float:
    """Mean squared error on variance over valid pairs (NaN when there are none)."""
    y, f = valid_pairs(realized, forecast)
    return float(np.mean(mse_loss(y, f))) if y.size else float("nan")


def mincer_zarnowitz_r2(realized: ArrayLike, forecast: ArrayLike) -> float:
    """R² of the regression ``log y = a + b log f + e`` (Mincer-Zarnowitz on log variance)."""
    y, f = valid_pairs(realized, forecast)
    if y.size < 3:
        return float("nan")
    ly, lf = np.log(y), np.log(f)
    r = np.corrcoef(ly, lf)[0, 1]
    return float(r * r) if np.isfinite(r) else float("nan")
