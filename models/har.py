"""HAR-RV and HARQ on log realized variance (Corsi 2009; Bollerslev, Patton & Quaedvlieg 2016).

Per symbol and horizon h: ``log(sum rv[t+1..t+h]) = b0 + bd har_d + bw har_w + bm har_m
(+ bq q_t har_d) + e`` where ``har_d``, ``har_w``, ``har_m`` are the panel's means of log RV
over the last 1, 7 and 30 days. HARQ lets the daily coefficient move with the
relative measurement error ``q_t = sqrt(rq_t) / rv_t``. Back-transformation to variance uses
a smearing factor estimated on held-out training rows (:class:`LogTargetRegressor`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from models.base import BaseForecaster, forward_variance, symbol_slices
from models.errors import ModelInputError
from models.logtarget import LogTargetRegressor

TINY = 1e-12  # floor before logs (decimal variance per day)


class HARForecaster(BaseForecaster):
    """HAR-RV on log realized variance with held-out bias correction, one fit per symbol.

    Parameters
    ----------
    horizons : tuple of int
        Horizons (days) a fit prepares; forecasting another horizon raises.
    holdout_fraction : float
        Share of the most recent training rows used to estimate the bias correction.
    window : int or None
        Use only the last ``window`` training rows per symbol (rolling); ``None`` expands.
    min_obs : int
        Symbols with fewer usable rows are left to the EWMA fallback.
    """

    name = "har"
    relative_cost = 4.0
    required_columns: ClassVar[tuple[str, ...]] = ("ret", "rv", "har_d", "har_w", "har_m")

    def __init__(
        self,
        horizons: tuple[int, ...] = (1, 7),
        holdout_fraction: float = 0.2,
        window: int | None = None,
        min_obs: int = 120,
    ) -> None:
        self.horizons = horizons
        self.holdout_fraction = holdout_fraction
        self.window = window
        self.min_obs = min_obs

    def _design(self, panel: pd.DataFrame) -> pd.DataFrame:
        # har_* are already means of log RV over the last 1, 7 and 30 days.
        return panel[["har_d", "har_w", "har_m"]].astype(float)

    def _fit(self, panel: pd.DataFrame) -> None:
        X_all = self._design(panel).to_numpy(dtype=float)
        dates = panel.index.get_level_values("date")
        self.regressors_: dict[tuple[str, int], LogTargetRegressor] = {}
        for h in self.horizons:
            y_all = forward_variance(panel, h).to_numpy(dtype=float)
            for symbol, rows in symbol_slices(panel):
                X, y = X_all[rows], y_all[rows]
                ok = np.isfinite(X).all(axis=1) & np.isfinite(y) & (y > 0)
                X_ok, y_ok = X[ok], y[ok]
                if self.window is not None:
                    X_ok, y_ok = X_ok[-self.window :], y_ok[-self.window :]
                if len(y_ok) < self.min_obs:
                    self._record_fallback(
                        symbol,
                        dates[rows.stop - 1],
                        f"only {len(y_ok)} usable rows at h={h}",
                        "forecasting with EWMA",
                    )
                    continue
                reg = LogTargetRegressor(holdout_fraction=self.holdout_fraction, gap=h)
                self.regressors_[(symbol, h)] = reg.fit(X_ok, y_ok)

    def _forecast(self, panel: pd.DataFrame, horizon: int, start: pd.Timestamp | None) -> pd.Series:
        if horizon not in self.horizons:
            raise ModelInputError(
                f"{self.name} was fitted for horizons {self.horizons}, not {horizon}."
            )
        if start is not None:
            panel = panel[panel.index.get_level_values("date") >= start]
        X_all = self._design(panel).to_numpy(dtype=float)
        values = np.full(len(panel), np.nan)
        for symbol, rows in symbol_slices(panel):
            reg = self.regressors_.get((symbol, horizon))
            if reg is None:
                continue  # NaN → EWMA fallback in the base class
            X = X_all[rows]
            ok = np.isfinite(X).all(axis=1)
            part = np.full(len(X), np.nan)
            part[ok] = reg.predict(X[ok])
            values[rows] = part
        return pd.Series(values, index=panel.index)


class HARQForecaster(HARForecaster):
    """HARQ: HAR on log RV whose daily coefficient varies with ``sqrt(rq_t) / rv_t``."""

    name = "harq"
    required_columns: ClassVar[tuple[str, ...]] = (
        "ret",
        "rv",
        "har_d",
        "har_w",
        "har_m",
        "rq",
    )

    def _design(self, panel: pd.DataFrame) -> pd.DataFrame:
        X = super()._design(panel)
        rv = panel["rv"].astype(float).clip(lower=TINY)
        q = np.sqrt(panel["rq"].astype(float).clip(lower=0.0)) / rv
        X = X.copy()
        X["q_x_har_d"] = q.clip(upper=10.0) * X["har_d"]
        return X
