"""RiskMetrics EWMA variance and an asymmetric EWMA with a fitted sign term."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.signal import lfilter

from models.base import BaseForecaster, ewma_variance, forward_variance
from models.losses import qlike


class EWMAForecaster(BaseForecaster):
    r"""RiskMetrics (1996) exponentially weighted variance of daily log returns.

    :math:`\sigma^2_{t+1} = \lambda \sigma^2_t + (1 - \lambda) r_t^2`; the h-day forecast is
    :math:`h \sigma^2_{t+1}` (decimal variance). Nothing is estimated.

    Parameters
    ----------
    lam : float
        Decay factor, 0.94 for daily data.
    warmup : int
        Number of first squared returns averaged to seed the recursion.
    """

    name = "ewma"

    def __init__(self, lam: float = 0.94, warmup: int = 30) -> None:
        self.lam = lam
        self.warmup = warmup

    def _fit(self, panel: pd.DataFrame) -> None:
        self.lam_ = float(self.lam)

    def _forecast(self, panel: pd.DataFrame, horizon: int, start: pd.Timestamp | None) -> pd.Series:
        parts = [
            horizon * ewma_variance(g["ret"].to_numpy(), self.lam_, self.warmup)
            for _, g in panel.groupby(level="symbol", sort=False)
        ]
        return pd.Series(np.concatenate(parts), index=panel.index)


def asymmetric_ewma_variance(
    ret: np.ndarray, lam: float, theta: float, warmup: int = 30
) -> np.ndarray:
    r"""Asymmetric EWMA: :math:`\sigma^2_{t+1} = \lambda\sigma^2_t + (1-\lambda)(1 - \theta
    \,\mathrm{sign}(r_t)) r_t^2` (decimal per day).

    ``theta > 0`` makes falls raise variance more than rises; ``theta < 0`` the reverse,
    which crypto sometimes shows. NaN returns count as zero.
    """
    r = np.nan_to_num(np.asarray(ret, dtype=float))
    x = (1.0 - theta * np.sign(r)) * r * r
    if x.size == 0:
        return x
    seed = float(np.mean(r[: max(1, min(warmup, r.size))] ** 2)) or 1e-4
    out, _ = lfilter([1.0 - lam], [1.0, -lam], x, zi=[lam * seed])
    return np.maximum(np.asarray(out), 1e-12)


class AsymmetricEWMAForecaster(BaseForecaster):
    """EWMA with a sign-dependent weight on squared returns, ``theta`` fitted per symbol.

    ``theta`` in ``[-bound, bound]`` minimises the in-sample QLIKE of the one-day forecast
    against the realized variance ``rv`` of the next day; ``lam`` stays fixed.

    Parameters
    ----------
    lam : float
        Decay factor.
    bound : float
        Largest absolute asymmetry allowed (below 1 keeps every weight positive).
    warmup : int
        Number of first squared returns averaged to seed the recursion.
    """

    name = "ewma_asym"
    relative_cost = 3.0

    def __init__(self, lam: float = 0.94, bound: float = 0.9, warmup: int = 30) -> None:
        self.lam = lam
        self.bound = bound
        self.warmup = warmup

    def _fit(self, panel: pd.DataFrame) -> None:
        target = forward_variance(panel, 1)
        thetas: dict[str, float] = {}
        for symbol, g in panel.groupby(level="symbol", sort=False):
            ret = g["ret"].to_numpy()
            y = target.loc[g.index].to_numpy()

            def loss(theta: float, ret: np.ndarray = ret, y: np.ndarray = y) -> float:
                return qlike(y, asymmetric_ewma_variance(ret, self.lam, theta, self.warmup))

            res = minimize_scalar(loss, bounds=(-self.bound, self.bound), method="bounded")
            thetas[str(symbol)] = float(res.x) if np.isfinite(res.fun) else 0.0
        self.theta_ = thetas

    def _forecast(self, panel: pd.DataFrame, horizon: int, start: pd.Timestamp | None) -> pd.Series:
        parts = [
            horizon
            * asymmetric_ewma_variance(
                g["ret"].to_numpy(), self.lam, self.theta_.get(str(s), 0.0), self.warmup
            )
            for s, g in panel.groupby(level="symbol", sort=False)
        ]
        return pd.Series(np.concatenate(parts), index=panel.index)
