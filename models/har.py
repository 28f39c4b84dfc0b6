"""HAR-RV and HARQ on log realized variance (Corsi 2009; Bollerslev, Patton & Quaedvlieg 2016).

Per symbol and horizon h: ``log(sum rv[t+1..t+h]) = b0 + bd log RV_d + bw log RV_w
+ bm log RV_m (+ bq q_t log RV_d) + e`` with the daily/weekly/monthly averages of the
panel (``har_d``, ``har_w``, ``har_m``). HARQ lets the daily coefficient move with the
relative measurement error ``q_t = sqrt(rq_t) / rv_t``. Back-transformation to variance uses
a smearing factor estimated on held-out training rows (:class:`LogTargetRegressor`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from models.base import BaseForecaster, forward_variance
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
        return pd.DataFrame(
            {
                c: np.log(panel[c].astype(float).clip(lower=TINY))
                for c in ("har_d", "har_w", "har_m")
            },
            index=panel.index,
        )

    def _fit(self, panel: pd.DataFrame) -> None:
        X_all = self._design(panel)
        self.regressors_: dict[tuple[str, int], LogTargetRegressor] = {}
        for h in self.horizons:
            y_all = forward_variance(panel, h)
            for symbol, X in X_all.groupby(level="symbol", sort=False):
                y = y_all.loc[X.index]
                ok = (np.isfinite(X).all(axis=1) & np.isfinite(y) & (y > 0)).to_numpy()
                X_ok, y_ok = X[ok], y[ok]
                if self.window is not None:
                    X_ok, y_ok = X_ok.iloc[-self.window :], y_ok.iloc[-self.window :]
                if len(y_ok) < self.min_obs:
                    last = X.index.get_level_values("date")[-1]
                    self._record_fallback(
                        str(symbol), last, f"only {len(y_ok)} usable rows", "forecasting with EWMA"
                    )
                    continue
                reg = LogTargetRegressor(holdout_fraction=self.holdout_fraction, gap=h)
                self.regressors_[(str(symbol), h)] = reg.fit(X_ok.to_numpy(), y_ok.to_numpy())

    def _forecast(self, panel: pd.DataFrame, horizon: int, start: pd.Timestamp | None) -> pd.Series:
        if horizon not in self.horizons:
            raise ModelInputError(
                f"{self.name} was fitted for horizons {self.horizons}, not {horizon}."
            )
        if start is not None:
            panel = panel[panel.index.get_level_values("date") >= start]
        X_all = self._design(panel)
        out = pd.Series(np.nan, index=panel.index)
        for symbol, X in X_all.groupby(level="symbol", sort=False):
            reg = self.regressors_.get((str(symbol), horizon))
            if reg is None:
                continue  # NaN → EWMA fallback in the base class
            ok = np.isfinite(X).all(axis=1).to_numpy()
            values = np.full(len(X), np.nan)
            values[ok] = reg.predict(X.to_numpy()[ok])
            out.loc[X.index] = values
        return out


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
        X["q_x_har_d"] = q.clip(upper=10.0) * X["har_d"]
        return X
