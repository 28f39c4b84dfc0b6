"""Forecast comparison: Diebold-Mariano (HAC, Harvey-Leybourne-Newbold) and the MCS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats


@dataclass(frozen=True)
class DMResult:
    """Diebold-Mariano test of equal predictive accuracy.

    ``statistic`` is HLN-corrected and negative when the first model has the lower loss;
    ``pvalue`` is two-sided from a Student t with ``n - 1`` degrees of freedom.
    """

    statistic: float
    pvalue: float
    mean_diff: float
    n: int


def diebold_mariano(loss_a: ArrayLike, loss_b: ArrayLike, horizon: int = 1) -> DMResult:
    """Diebold-Mariano (1995) test on the loss differential ``d = loss_a - loss_b``.

    The long-run variance of ``d`` uses autocovariances up to lag ``horizon - 1`` (the
    h-step forecast errors overlap), with the Harvey, Leybourne & Newbold (1997)
    small-sample correction ``sqrt((n + 1 - 2h + h(h-1)/n) / n)``. If that truncated
    estimate is not positive the Bartlett (Newey-West) weights are used instead.
    Pairs with a NaN in either loss are dropped.
    """
    a = np.asarray(loss_a, dtype=float)
    b = np.asarray(loss_b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    n = d.size
    h = max(int(horizon), 1)
    if n < 3 or np.allclose(d, d[0]):
        return DMResult(float("nan"), float("nan"), float(np.mean(d)) if n else float("nan"), n)
    dc = d - d.mean()
    gamma = np.array([np.dot(dc[k:], dc[: n - k]) / n for k in range(min(h, n))])
    lrv = gamma[0] + 2.0 * gamma[1:].sum()
    if lrv <= 0:
        weights = 1.0 - np.arange(1, gamma.size) / gamma.size
        lrv = gamma[0] + 2.0 * float(np.dot(weights, gamma[1:]))
    dm = d.mean() / np.sqrt(lrv / n)
    correction = np.sqrt(max((n + 1 - 2 * h + h * (h - 1) / n) / n, 0.0))
    statistic = float(dm * correction)
    pvalue = float(2.0 * stats.t.sf(abs(statistic), df=n - 1))
    return DMResult(statistic, pvalue, float(d.mean()), n)


def model_confidence_set(
    losses: pd.DataFrame,
    size: float = 0.10,
    reps: int = 500,
    block_size: int | None = None,
    seed: int = 0,
) -> pd.Series:
    """Membership of the Hansen-Lunde-Nason Model Confidence Set at level ``1 - size``.

    Parameters
    ----------
    losses : DataFrame
        One column per model, one row per date; rows with any NaN are dropped.
    size : float
        Test size (0.10 gives the 90% MCS).
    reps, block_size, seed
        Stationary-bootstrap settings passed to :class:`arch.bootstrap.MCS`
        (``block_size=None`` uses ``sqrt(T)``).

    Returns
    -------
    Series of bool indexed by model name (True = in the set).
    """
    from arch.bootstrap import MCS

    clean = losses.dropna()
    if clean.shape[1] == 1:
        return pd.Series(True, index=losses.columns)
    if len(clean) < 10:
        return pd.Series(True, index=losses.columns)
    block = block_size or max(int(np.sqrt(len(clean))), 1)
    mcs = MCS(clean, size=size, reps=reps, block_size=block, method="R", seed=seed)
    mcs.compute()
    included = set(mcs.included)
    return pd.Series([c in included for c in losses.columns], index=losses.columns)
