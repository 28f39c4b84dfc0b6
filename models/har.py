"""HAR-RV and HARQ on log realized variance (Corsi 2009; Bollerslev, Patton & Quaedvlieg 2016).

Per symbol and horizon h: ``log(sum rv[t+1..t+h]) = b0 + bd har_d + bw har_w + bm har_m
(+ bq q_t har_d) + e`` where ``har_d``, ``har_w``, ``har_m`` are the panel's means of log RV
over the last 1, 7 and 30 days. HARQ lets the daily coefficient move with the
relative measurement error ``q_t = sqrt(rq_t) / rv_t``. Back-transformation to variance uses
a smearing factor estimated on held-out training rows (:class:`LogTargetRegressor`).
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import pandas as pd

from models.base import BaseForecaster, ewma_variance, forward_variance, symbol_slices
from models.errors import FitFallbackWarning, ModelInputError
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
        A symbol with fewer usable rows at a horizon (e.g. a recent listing: the 30-day
        term and the h-day target cost 20 + h rows) is not fitted there: it keeps its
        previous fit if this instance has one, else it is forecast by EWMA (λ = 0.94).

    Attributes
    ----------
    regressors_ : dict
        ``(symbol, horizon) →`` fitted :class:`LogTargetRegressor`.
    unfitted_ : dict
        ``(symbol, horizon) →`` why it has no fit (forecast by EWMA).
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
        previous: dict[tuple[str, int], LogTargetRegressor] = dict(getattr(self, "regressors_", {}))
        self.regressors_: dict[tuple[str, int], LogTargetRegressor] = {}
        self.unfitted_: dict[tuple[str, int], str] = {}
        for h in self.horizons:
            y_all = forward_variance(panel, h).to_numpy(dtype=float)
            for symbol, rows in symbol_slices(panel):
                X, y = X_all[rows], y_all[rows]
                ok = np.isfinite(X).all(axis=1) & np.isfinite(y) & (y > 0)
                X_ok, y_ok = X[ok], y[ok]
                if self.window is not None:
                    X_ok, y_ok = X_ok[-self.window :], y_ok[-self.window :]
                if len(y_ok) >= self.min_obs:
                    reg = LogTargetRegressor(holdout_fraction=self.holdout_fraction, gap=h)
                    self.regressors_[(symbol, h)] = reg.fit(X_ok, y_ok)
                    continue
                reason = (
                    f"only {len(y_ok)} usable rows at h={h} (min_obs={self.min_obs}; "
                    f"history from {dates[rows.start].date()})"
                )
                if (symbol, h) in previous:
                    self.regressors_[(symbol, h)] = previous[(symbol, h)]
                    action = "kept the previous fit"
                else:
                    self.unfitted_[(symbol, h)] = f"fit at {dates[rows.stop - 1].date()}: {reason}"
                    action = "forecasting with EWMA"
                self._record_fallback(symbol, dates[rows.stop - 1], reason, action)

    def _forecast(self, panel: pd.DataFrame, horizon: int, start: pd.Timestamp | None) -> pd.Series:
        if horizon not in self.horizons:
            raise ModelInputError(
                f"{self.name} was fitted for horizons {self.horizons}, not {horizon}."
            )
        full = panel
        if start is not None:
            panel = panel[panel.index.get_level_values("date") >= start]
        X_all = self._design(panel).to_numpy(dtype=float)
        values = np.full(len(panel), np.nan)
        for symbol, rows in symbol_slices(panel):
            reg = self.regressors_.get((symbol, horizon))
            if reg is None:
                values[rows] = self._ewma_stand_in(full, panel, symbol, rows, horizon)
                continue
            X = X_all[rows]
            ok = np.isfinite(X).all(axis=1)  # else NaN → EWMA in the base class, warned
            part = np.full(len(X), np.nan)
            part[ok] = reg.predict(X[ok])
            values[rows] = part
        return pd.Series(values, index=panel.index)

    def _ewma_stand_in(
        self, full: pd.DataFrame, panel: pd.DataFrame, symbol: str, rows: slice, horizon: int
    ) -> np.ndarray:
        """EWMA h-day variance (λ = 0.94) of a symbol that has no fit, with a named warning.

        The filter runs over the symbol's whole history in ``full`` (as the base class's
        fallback does), and the last ``len(rows)`` values are returned: ``panel`` is a
        date-suffix of ``full`` per symbol.
        """
        ret = full["ret"].xs(symbol, level="symbol").to_numpy(dtype=float)
        n = rows.stop - rows.start
        stand_in = horizon * np.maximum(ewma_variance(ret), 1e-10)[len(ret) - n :]
        dates = panel.index.get_level_values("date")[rows]
        reason = self.unfitted_.get((symbol, horizon), "not in the training panel")
        warnings.warn(
            f"{self.name}: no h={horizon} fit for {symbol} ({reason}); {n} forecast(s) "
            f"{dates[0].date()}..{dates[-1].date()} by EWMA",
            FitFallbackWarning,
            stacklevel=4,
        )
        return stand_in


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
