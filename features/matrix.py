"""The daily feature panel for forecasters: realized measures, HAR terms, exogenous inputs
and forward targets, stacked over symbols.

Every feature in row (symbol, t) uses data stamped on day t or earlier; only the
``target_*`` columns look forward. Windows count calendar days (crypto trades 24/7): the HAR
"weekly" and "monthly" terms are means over the last 7 and 30 days.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.history import MarketHistory
from features.realized import MIN_HOURS, YZ_WINDOW, daily_realized_measures

#: HAR windows in calendar days: daily, weekly, monthly.
HAR_WINDOWS: dict[str, int] = {"har_d": 1, "har_w": 7, "har_m": 30}
#: Fraction of a HAR window's days that must have a finite log RV (else NaN).
HAR_MIN_FRACTION = 0.7
#: Forecast horizons (days) with a forward target ``target_rv_h{h}``.
HORIZONS: tuple[int, ...] = (1, 7)

FEATURE_COLUMNS: tuple[str, ...] = (
    "log_rv",
    "har_d",
    "har_w",
    "har_m",
    "ret_lag1",
    "leverage",
    "dvol",
    "dvol_change",
    "funding",
    "log_volume",
)


def forward_sum(values: pd.Series, horizon: int) -> pd.Series:
    """Sum of ``values`` over days t+1 … t+horizon (NaN if any of them is NaN or absent)."""
    trailing = values.rolling(horizon, min_periods=horizon).sum()
    return trailing.shift(-horizon)


def har_terms(log_rv: pd.Series) -> pd.DataFrame:
    """HAR components: trailing means of log RV over 1, 7 and 30 calendar days."""
    out = {}
    for name, window in HAR_WINDOWS.items():
        need = max(1, int(np.ceil(HAR_MIN_FRACTION * window)))
        out[name] = log_rv.rolling(window, min_periods=need).mean()
    return pd.DataFrame(out, index=log_rv.index)


def _daily_dvol(history: MarketHistory, symbol: str, dates: pd.DatetimeIndex) -> pd.Series:
    frame = history.dvol.get(symbol)
    if frame is None or frame.empty:
        return pd.Series(np.nan, index=dates)
    # The bar stamped day t closes at the end of day t: known at t's close.
    close = frame["close"].astype(float) / 100.0
    close.index = pd.DatetimeIndex(close.index).as_unit("ns")
    return close.reindex(dates)


def _daily_funding(history: MarketHistory, symbol: str, dates: pd.DatetimeIndex) -> pd.Series:
    frame = history.funding.get(symbol)
    if frame is None or frame.empty:
        return pd.Series(np.nan, index=dates)
    rates = frame["funding_rate"].astype(float)
    days = pd.DatetimeIndex(rates.index).floor("D").as_unit("ns")
    daily = rates.groupby(days).sum(min_count=1)
    return daily.reindex(dates)


def symbol_features(
    history: MarketHistory,
    symbol: str,
    *,
    min_hours: int = MIN_HOURS,
    yz_window: int = YZ_WINDOW,
) -> pd.DataFrame:
    """Daily features and targets of one symbol, indexed by ``date``.

    See :func:`build_daily_panel` for the columns.
    """
    hourly = history.spot[symbol]
    daily = daily_realized_measures(hourly, min_hours=min_hours, yz_window=yz_window)
    dates = pd.DatetimeIndex(daily.index)
    rv = daily["rv"]
    log_rv = np.log(rv.where(rv > 0))
    har = har_terms(log_rv)
    dvol = _daily_dvol(history, symbol, dates)
    turnover = _turnover(hourly, dates)
    extra: dict[str, pd.Series] = {
        "log_rv": log_rv,
        "har_d": har["har_d"],
        "har_w": har["har_w"],
        "har_m": har["har_m"],
        "ret_lag1": daily["ret"].shift(1),
        "leverage": np.minimum(daily["ret"], 0.0),
        "dvol": dvol,
        "dvol_change": dvol - dvol.shift(1),
        "funding": _daily_funding(history, symbol, dates),
        "log_volume": np.log(turnover.where(turnover > 0)),
    }
    for h in HORIZONS:
        extra[f"target_rv_h{h}"] = forward_sum(rv, h)
    return pd.concat([daily, pd.DataFrame(extra, index=dates)], axis=1)


def _turnover(hourly: pd.DataFrame, dates: pd.DatetimeIndex) -> pd.Series:
    """Daily quote-currency turnover Σ volume × close (USDT)."""
    if "volume" not in hourly.columns:
        return pd.Series(np.nan, index=dates)
    quote = hourly["volume"].astype(float) * hourly["close"].astype(float)
    days = pd.DatetimeIndex(hourly.index).floor("D").as_unit("ns")
    return quote.groupby(days).sum(min_count=1).reindex(dates)


def build_daily_panel(
    history: MarketHistory,
    symbols: Iterable[str] | None = None,
    *,
    min_hours: int = MIN_HOURS,
    yz_window: int = YZ_WINDOW,
) -> pd.DataFrame:
    """Stack every symbol's daily features into one panel indexed by (``symbol``, ``date``).

    Parameters
    ----------
    history:
        Loaded market history (spot hourly bars drive the realized measures).
    symbols:
        Symbols to include, in this order (``None``: every symbol with spot history).
    min_hours, yz_window:
        Passed to :func:`features.realized.daily_realized_measures`.

    Returns
    -------
    DataFrame
        MultiIndex (``symbol``, ``date``), ``date`` = UTC midnight of the day covered.
        Columns: the realized measures of :func:`~features.realized.daily_realized_measures`
        (``open … rq``), then

        * ``log_rv``: ln(rv) (NaN where rv is NaN or 0);
        * ``har_d``, ``har_w``, ``har_m``: means of ``log_rv`` over the last 1, 7, 30 days
          (NaN when fewer than 70 % of the window's days have a value);
        * ``ret_lag1``: previous day's ``ret``; ``leverage``: min(``ret``, 0);
        * ``dvol``: Deribit DVOL close of the day, **decimal annualised** volatility (NaN
          where none); ``dvol_change``: dvol_t − dvol_{t−1} (decimal);
        * ``funding``: sum of the day's funding rates (decimal per day; NaN where none);
        * ``log_volume``: ln of the day's spot turnover Σ volume × close (USDT);
        * ``target_rv_h1``, ``target_rv_h7``: Σ rv over days t+1 … t+h (decimal variance
          per h days), NaN where not yet known or where any of those days lacks an rv.

        Every column except the targets uses data up to and including day t only.
    """
    chosen = list(history.symbols if symbols is None else symbols)
    frames = []
    for symbol in chosen:
        if symbol not in history.spot:
            raise KeyError(f"symbol {symbol!r} has no spot history in this MarketHistory")
        frames.append(symbol_features(history, symbol, min_hours=min_hours, yz_window=yz_window))
    if not frames:
        raise ValueError("build_daily_panel needs at least one symbol")
    panel = pd.concat(frames, keys=chosen, names=["symbol", "date"])
    return panel
