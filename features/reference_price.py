"""A consolidated hourly reference price per underlying that survives one bad source.

For each hour the reference is the **median** of the closes of the sources that are live at
that hour: Binance spot, the USDⓈ-M perpetual (last price) and the mark price. With three
live sources one wrong or frozen source cannot move the median outside the other two.

A source is *expected* at an hour when its series covers that hour (between its first and
last bar). An expected source is *live* when it has a bar for the hour and its close has not
been frozen for ``stale_hours`` or more hours in a row (a stuck feed repeats its last price).

Confidence in [0, 1] is ``coverage × agreement``:

* coverage = live sources / expected sources (falls when a source is missing or stale);
* agreement = 1 / (1 + (dispersion / tolerance)²), where dispersion is the largest absolute
  relative deviation of a live source from the reference; with ``tolerance`` = 1 % a
  20 bp basis gives 0.996, 1 % gives 0.5 and 3 % gives 0.1;
* with a single live source agreement cannot be measured and is ``SINGLE_SOURCE`` (0.5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.history import MarketHistory

SOURCES: tuple[str, ...] = ("spot", "perp", "mark")
#: Relative dispersion (decimal) at which agreement falls to one half.
TOLERANCE = 0.01
#: Hours of an unchanged close after which a source counts as stale.
STALE_HOURS = 3
#: Agreement factor when only one source is live.
SINGLE_SOURCE = 0.5


def _frozen(close: pd.Series, hours: int) -> np.ndarray:
    """True where the close has not changed over the last ``hours`` consecutive hours."""
    hourly = close.to_numpy()
    unchanged = np.r_[False, hourly[1:] == hourly[:-1]]
    runs = pd.Series(unchanged.astype(int)).groupby((~unchanged).cumsum()).cumsum().to_numpy()
    return runs >= hours


def reference_price(
    history: MarketHistory,
    symbol: str,
    *,
    tolerance: float = TOLERANCE,
    stale_hours: int = STALE_HOURS,
) -> pd.DataFrame:
    """Hourly consolidated price, per-source deviations and confidence for ``symbol``.

    Parameters
    ----------
    history:
        Loaded market history (uses ``spot``, ``perp`` and ``mark`` closes).
    symbol:
        Base asset, e.g. ``"BTC"``.
    tolerance:
        Relative dispersion (decimal) at which the agreement factor is one half.
    stale_hours:
        A close unchanged for this many hours marks its source as stale.

    Returns
    -------
    DataFrame
        Indexed by hourly ``timestamp`` (UTC, every hour from the first to the last bar of
        any source) with ``price`` (quote currency; NaN when no source is live),
        ``dev_spot``, ``dev_perp``, ``dev_mark`` (close / price − 1, decimal; NaN where the
        source has no bar), ``live_spot``, ``live_perp``, ``live_mark`` (bool),
        ``n_live``, ``n_expected`` and ``confidence`` in [0, 1].
    """
    closes: dict[str, pd.Series] = {}
    for kind in SOURCES:
        frame = getattr(history, kind).get(symbol)
        if frame is not None and not frame.empty:
            closes[kind] = frame["close"].astype(float)
    if not closes:
        raise KeyError(f"symbol {symbol!r} has no spot, perp or mark history")
    start = min(s.index[0] for s in closes.values())
    end = max(s.index[-1] for s in closes.values())
    hours = pd.date_range(start, end, freq="1h", name="timestamp")
    n = len(hours)
    price_src = np.full((n, len(SOURCES)), np.nan)
    live = np.zeros((n, len(SOURCES)), dtype=bool)
    expected = np.zeros((n, len(SOURCES)), dtype=bool)
    for j, kind in enumerate(SOURCES):
        if kind not in closes:
            continue
        series = closes[kind]
        aligned = series.reindex(hours)
        price_src[:, j] = aligned.to_numpy()
        expected[:, j] = (hours >= series.index[0]) & (hours <= series.index[-1])
        stale = np.zeros(n, dtype=bool)
        stale[hours.get_indexer(series.index)] = _frozen(series, stale_hours)
        live[:, j] = expected[:, j] & np.isfinite(price_src[:, j]) & ~stale
    live_prices = np.where(live, price_src, np.nan)
    n_live = live.sum(axis=1)
    n_expected = expected.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        price = np.full(n, np.nan)
        some = n_live > 0
        price[some] = np.nanmedian(live_prices[some], axis=1)
        dev = price_src / price[:, None] - 1.0
        dispersion = np.nanmax(np.where(live, np.abs(dev), np.nan)[some], axis=1)
    agreement = np.zeros(n)
    agreement[some] = 1.0 / (1.0 + (dispersion / tolerance) ** 2)
    agreement[n_live == 1] = SINGLE_SOURCE
    coverage = np.divide(n_live, n_expected, out=np.zeros(n), where=n_expected > 0)
    out = pd.DataFrame({"price": price}, index=hours)
    for j, kind in enumerate(SOURCES):
        out[f"dev_{kind}"] = dev[:, j]
    for j, kind in enumerate(SOURCES):
        out[f"live_{kind}"] = live[:, j]
    out["n_live"] = n_live
    out["n_expected"] = n_expected
    out["confidence"] = np.clip(coverage * agreement, 0.0, 1.0)
    return out
