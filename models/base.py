"""The forecaster contract: a scikit-learn estimator that turns a daily panel into variances.

Every forecaster consumes the daily panel of :func:`features.matrix.build_daily_panel`
(MultiIndex ``(symbol, date)``, decimal variances per day) and returns a :class:`VolForecast`:
the h-day variance forecast made at the close of each date for days ``date+1 … date+h``.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from models.errors import FitFallbackWarning, ModelInputError, VarianceFloorWarning

UNITS = "decimal variance per horizon"
INDEX_NAMES = ("symbol", "date")


@dataclass(frozen=True)
class VolForecast:
    """Variance forecasts of one model at one horizon.

    Attributes
    ----------
    model : str
        Registry name of the model (``"garch"``, ``"har"``, ...).
    horizon : int
        Forecast horizon in days.
    variance : pandas.Series
        Indexed by ``(symbol, date)``: forecast of the summed daily variance over days
        ``date+1 … date+horizon`` made at the close of ``date``; decimal, never annualised.
    origin : pandas.Timestamp
        Last date of the data the parameters were fitted on.
    units : str
        Always ``"decimal variance per horizon"``.
    """

    model: str
    horizon: int
    variance: pd.Series
    origin: pd.Timestamp
    units: str = field(default=UNITS)

    def volatility(self) -> pd.Series:
        """Return the h-day volatility (square root of :attr:`variance`, decimal)."""
        return np.sqrt(self.variance)


@dataclass(frozen=True)
class Fallback:
    """One fit that failed and what replaced it."""

    model: str
    symbol: str
    date: pd.Timestamp
    reason: str
    action: str


def validate_panel(panel: pd.DataFrame, columns: tuple[str, ...] = ("ret", "rv")) -> pd.DataFrame:
    """Check that ``panel`` follows the daily-panel contract and return it sorted.

    Raises
    ------
    ModelInputError
        If the index is not ``(symbol, date)`` or a required column is missing.
    """
    if not isinstance(panel, pd.DataFrame) or not isinstance(panel.index, pd.MultiIndex):
        raise ModelInputError("the panel must be a DataFrame indexed by (symbol, date).")
    if tuple(panel.index.names) != INDEX_NAMES:
        raise ModelInputError(
            f"the panel index must be named ('symbol', 'date'), got {tuple(panel.index.names)}."
        )
    missing = [c for c in columns if c not in panel.columns]
    if missing:
        raise ModelInputError(f"the panel lacks the column(s) {', '.join(missing)}.")
    if len(panel) == 0:
        raise ModelInputError("the panel is empty.")
    if not panel.index.is_monotonic_increasing:
        panel = panel.sort_index()
    return panel


def symbol_slices(panel: pd.DataFrame) -> list[tuple[str, slice]]:
    """Contiguous row ranges of each symbol in a panel sorted by (symbol, date)."""
    codes = panel.index.codes[0]
    levels = panel.index.levels[0]
    if len(codes) == 0:
        return []
    cuts = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(codes)]])
    return [
        (str(levels[codes[a]]), slice(int(a), int(b))) for a, b in zip(starts, stops, strict=True)
    ]


def forward_variance(panel: pd.DataFrame, horizon: int) -> pd.Series:
    """Realized h-day variance ``sum(rv[t+1 … t+h])`` per row, NaN where not yet known.

    Computed from the ``rv`` column of ``panel`` only, so a panel truncated at a date never
    yields a target that needs data after it.
    """
    rv = panel["rv"].astype(float)
    parts = [rv.groupby(level="symbol", sort=False).shift(-k) for k in range(1, horizon + 1)]
    total = parts[0]
    for part in parts[1:]:
        total = total + part  # NaN as soon as one day is missing
    return total.rename(f"target_rv_h{horizon}")


def ewma_variance(ret: np.ndarray, lam: float = 0.94, warmup: int = 30) -> np.ndarray:
    """RiskMetrics variance for the day after each observation (decimal per day).

    ``out[t] = lam * out[t-1] + (1 - lam) * ret[t]**2`` seeded with the mean square of the
    first ``warmup`` returns; NaN returns count as zero.
    """
    from scipy.signal import lfilter

    r2 = np.nan_to_num(np.asarray(ret, dtype=float)) ** 2
    if r2.size == 0:
        return r2
    seed = float(np.mean(r2[: max(1, min(warmup, r2.size))]))
    seed = seed if seed > 0 else 1e-4
    out, _ = lfilter([1.0 - lam], [1.0, -lam], r2, zi=[lam * seed])
    return np.asarray(out)


def ewma_fallback(panel: pd.DataFrame, horizon: int) -> pd.Series:
    """EWMA (lambda 0.94) h-day variance for every row of ``panel``; always positive."""
    values = [
        horizon * np.maximum(ewma_variance(g["ret"].to_numpy()), 1e-10)
        for _, g in panel.groupby(level="symbol", sort=False)
    ]
    return pd.Series(np.concatenate(values), index=panel.index, dtype=float)


def _date_runs(index: pd.MultiIndex, limit: int = 3) -> str:
    """``"ETH 2021-10-28..2021-10-29, 2021-11-02; BTC …"``: runs of consecutive days."""
    frame = index.to_frame(index=False)
    symbol, date = frame.columns[0], frame.columns[1]
    parts = []
    for name, group in frame.groupby(symbol, sort=True):
        days = pd.DatetimeIndex(group[date]).sort_values()
        breaks = np.flatnonzero((days[1:] - days[:-1]) != pd.Timedelta(days=1)) + 1
        runs = [
            f"{run[0].date()}" if len(run) == 1 else f"{run[0].date()}..{run[-1].date()}"
            for run in np.split(days, breaks)
        ]
        more = f", … ({len(runs) - limit} more)" if len(runs) > limit else ""
        parts.append(f"{name} {', '.join(runs[:limit])}{more}")
    return "; ".join(parts)


class BaseForecaster(BaseEstimator, ABC):  # type: ignore[misc]
    """Public, validated ``fit``/``forecast``; subclasses implement ``_fit``/``_forecast``.

    Fitted attributes (trailing underscore): ``origin_`` (last fitted date),
    ``symbols_``, ``fallbacks_`` (list of :class:`Fallback` of the latest fit) and
    ``n_fallbacks_`` (running count over all fits of this instance).
    """

    name: ClassVar[str] = "base"
    required_columns: ClassVar[tuple[str, ...]] = ("ret", "rv")
    relative_cost: ClassVar[float] = 1.0
    """Rough walk-forward cost (EWMA = 1); parallel runs start the costliest first."""

    def fit(self, panel: pd.DataFrame, y: object = None) -> Self:
        """Fit on every row of ``panel`` (targets are rebuilt from ``rv`` inside it).

        Parameters
        ----------
        panel : DataFrame
            Daily panel indexed by ``(symbol, date)``; data after the last date are never
            needed because targets are rebuilt from the panel's own ``rv``.
        y : ignored
            Present for scikit-learn compatibility.
        """
        panel = validate_panel(panel, self.required_columns)
        self.fallbacks_: list[Fallback] = []
        self.n_fallbacks_ = getattr(self, "n_fallbacks_", 0)
        self._fit(panel)
        self.origin_ = pd.Timestamp(panel.index.get_level_values("date").max())
        self.symbols_ = tuple(panel.index.unique(level="symbol"))
        self.n_fallbacks_ += len(self.fallbacks_)
        return self

    def forecast(
        self, panel: pd.DataFrame, horizon: int, start: pd.Timestamp | None = None
    ) -> VolForecast:
        """Forecast the ``horizon``-day variance at the close of every date of ``panel``.

        Parameters
        ----------
        panel : DataFrame
            Daily panel; the forecast for date t uses rows up to t only.
        horizon : int
            Days ahead (1 or more); the result is the sum of daily variances.
        start : Timestamp, optional
            Return forecasts for dates on or after ``start`` only (the filter still runs
            over the whole panel).

        Returns
        -------
        VolForecast
            Strictly positive, finite variances (decimal per horizon).
        """
        check_is_fitted(self, "origin_")
        if int(horizon) < 1:
            raise ModelInputError(f"horizon must be a positive number of days, got {horizon}.")
        panel = validate_panel(panel, self.required_columns)
        variance = self._forecast(panel, int(horizon), start)
        variance = variance.reindex(panel.index) if start is None else variance
        variance = self._guard(panel, variance, int(horizon))
        if start is not None:
            variance = variance[variance.index.get_level_values("date") >= start]
        variance.index = variance.index.set_names(list(INDEX_NAMES))
        return VolForecast(self.name, int(horizon), variance.rename("variance"), self.origin_)

    def _guard(self, panel: pd.DataFrame, variance: pd.Series, horizon: int) -> pd.Series:
        """Replace non-finite or non-positive values by the EWMA fallback (warned)."""
        bad = ~np.isfinite(variance.to_numpy(dtype=float)) | (variance.to_numpy() <= 0)
        if not bad.any():
            return variance.astype(float)
        fallback = ewma_fallback(panel, horizon).reindex(variance.index)
        named = _date_runs(variance.index[bad])
        warnings.warn(
            f"{self.name}: {int(bad.sum())} h={horizon} forecast(s) not finite or not "
            f"positive (a missing input feature or a degenerate fit), replaced by EWMA: "
            f"{named}",
            VarianceFloorWarning,
            stacklevel=3,
        )
        return variance.astype(float).where(~bad, fallback)

    def _record_fallback(self, symbol: str, date: pd.Timestamp, reason: str, action: str) -> None:
        """Log (warn) and remember one failed fit."""
        item = Fallback(self.name, str(symbol), pd.Timestamp(date), reason, action)
        self.fallbacks_.append(item)
        warnings.warn(
            f"{self.name}: fit failed for {symbol} at {pd.Timestamp(date).date()} "
            f"({reason}); {action}",
            FitFallbackWarning,
            stacklevel=3,
        )

    @abstractmethod
    def _fit(self, panel: pd.DataFrame) -> None:
        """Learn fitted attributes from a validated panel."""

    @abstractmethod
    def _forecast(self, panel: pd.DataFrame, horizon: int, start: pd.Timestamp | None) -> pd.Series:
        """Return h-day variances indexed like (a date-suffix of) ``panel``."""
