"""Load market history from a data directory into the documented contract.

``load_market_history(data_dir, symbols, start, end)`` returns a :class:`MarketHistory`:
one dict per source keyed by base asset (``"BTC"``), each frame indexed by the UTC bar-open
``timestamp``. Files are validated (:mod:`features.validation`), cleaned by the documented
policy (:mod:`features.cleaning`), and the counts are logged and kept in ``report``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd

from features.cache import read_validated
from features.cleaning import clean_series
from features.errors import MissingDataError
from features.layout import DVOL, FUNDING, MARK, OPTIONS, PERP, SPOT, SourceSpec, discover

log = logging.getLogger(__name__)

TimeLike: TypeAlias = str | pd.Timestamp | dt.date | None


def _empty_report() -> pd.DataFrame:
    return pd.DataFrame()


@dataclass(frozen=True)
class MarketHistory:
    """Market history per source, keyed by base-asset symbol.

    Attributes
    ----------
    spot, perp:
        Hourly klines ``open, high, low, close, volume`` (quote-currency prices, base-coin
        volume), indexed by bar-open ``timestamp`` (UTC).
    mark:
        Hourly mark-price klines ``open, high, low, close``.
    funding:
        ``funding_rate`` (decimal per 8 h funding interval) at each funding time.
    dvol:
        Daily DVOL ``open, high, low, close`` in **percent** (annualised, as published),
        indexed by the UTC day.
    options:
        Option-chain snapshots, Deribit columns as published, indexed by row number.
    report:
        One row per loaded file: kind, symbol, file, first/last timestamp and the cleaning
        counts (dropped launch-day bars, missing bars, gap runs, zero-volume, flat bars...).
    """

    spot: Mapping[str, pd.DataFrame]
    perp: Mapping[str, pd.DataFrame]
    mark: Mapping[str, pd.DataFrame]
    funding: Mapping[str, pd.DataFrame]
    dvol: Mapping[str, pd.DataFrame]
    options: Mapping[str, pd.DataFrame]
    report: pd.DataFrame = field(default_factory=_empty_report)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbols with a spot history, in load order."""
        return tuple(self.spot)


_PERIOD_FREQ = {4: "Y", 7: "M", 10: "D"}
_PARTIAL_DATE = re.compile(r"\d{4}(-\d{2}){0,2}")


def time_bound(value: TimeLike, side: str) -> pd.Timestamp | None:
    """Resolve a ``start``/``end`` argument to a UTC instant.

    A date-only string (``"2024"``, ``"2024-06"``, ``"2024-06-30"``) or a ``datetime.date``
    covers its whole period: ``start`` resolves to the period's first instant, ``end`` to its
    last. Anything else (``Timestamp``, ``datetime``, full ISO strings) is an instant; naive
    values are taken as UTC.
    """
    if value is None:
        return None
    if isinstance(value, str) and _PARTIAL_DATE.fullmatch(value.strip()):
        text = value.strip()
        period = pd.Period(text, freq=_PERIOD_FREQ[len(text)])
        ts = period.start_time if side == "start" else period.end_time
        return pd.Timestamp(ts).tz_localize("UTC")
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        day = pd.Timestamp(value)
        ts = day if side == "start" else day + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
        return ts.tz_localize("UTC")
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def slice_time(frame: pd.DataFrame, start: TimeLike, end: TimeLike) -> pd.DataFrame:
    """Rows with ``start <= timestamp <= end`` (both inclusive; see :func:`time_bound`).

    ``frame`` must be indexed by a sorted UTC ``DatetimeIndex``.
    """
    if start is None and end is None:
        return frame
    stamps = pd.DatetimeIndex(frame.index).as_unit("ns").asi8
    lo_ts, hi_ts = time_bound(start, "start"), time_bound(end, "end")
    lo = 0 if lo_ts is None else int(np.searchsorted(stamps, lo_ts.value, side="left"))
    hi = len(stamps) if hi_ts is None else int(np.searchsorted(stamps, hi_ts.value, side="right"))
    return frame.iloc[lo : max(lo, hi)]


def _series(
    data_dir: Path, spec: SourceSpec, path: Path, symbol: str, use_cache: bool
) -> tuple[pd.DataFrame, dict[str, object]]:
    name = path.relative_to(data_dir).as_posix()
    raw = read_validated(path, spec, name, data_dir, use_cache)
    frame = raw.set_index("timestamp")
    frame = frame[[c for c in spec.columns if c != "timestamp"]]
    frame, counts = clean_series(frame, spec.kind, spec.interval)
    row: dict[str, object] = {"kind": spec.kind, "symbol": symbol, "file": name}
    row["first"] = frame.index[0] if len(frame) else pd.NaT
    row["last"] = frame.index[-1] if len(frame) else pd.NaT
    row.update(counts.as_dict())
    log.info(
        "%s: %d rows kept, %d launch-day bars dropped, %d missing bars in %d gaps, "
        "%d zero-volume bars, %d flat bars, %d large moves flagged",
        name,
        counts.rows,
        counts.dropped_launch_day,
        counts.missing_bars,
        counts.gap_runs,
        counts.zero_volume,
        counts.flat_bars,
        counts.large_moves,
    )
    return frame, row


def _options(
    data_dir: Path, paths: list[Path], start: TimeLike, end: TimeLike, use_cache: bool
) -> pd.DataFrame:
    frames = []
    for path in paths:
        name = path.relative_to(data_dir).as_posix()
        frames.append(read_validated(path, OPTIONS, name, data_dir, use_cache))
        log.info("%s: %d option quotes", name, len(frames[-1]))
    chain = pd.concat(frames, ignore_index=True)
    if start is None and end is None:
        return chain
    taken = pd.DatetimeIndex(pd.to_datetime(chain["creation_timestamp"], unit="ms", utc=True))
    order = pd.Series(range(len(chain)), index=taken).sort_index()
    kept = slice_time(order.to_frame("row"), start, end)["row"].sort_values()
    return chain.iloc[kept.to_numpy()].reset_index(drop=True)


def load_market_history(
    data_dir: str | Path,
    symbols: Iterable[str] | None = None,
    start: TimeLike = None,
    end: TimeLike = None,
    *,
    use_cache: bool = True,
) -> MarketHistory:
    """Load, validate and clean market history for ``symbols`` between ``start`` and ``end``.

    Parameters
    ----------
    data_dir:
        A data directory laid out as in :mod:`features.layout` (``xmargin data sync`` fills
        one).
    symbols:
        Base assets (``"BTC"``); ``None`` loads every symbol that has a spot file.
    start, end:
        Inclusive time bounds (UTC). Date-only strings (``"2018"``, ``"2024-06"``,
        ``"2024-06-30"``) and ``datetime.date`` cover the whole period; timestamps are
        instants (naive ones are taken as UTC).
    use_cache:
        Read through the Arrow cache in ``<data_dir>/.cache`` (see :mod:`features.cache`).

    Returns
    -------
    MarketHistory
        Sources a symbol lacks are simply absent from that source's dict.

    Raises
    ------
    MissingDataError
        ``data_dir`` does not exist, or a requested symbol has no spot file.
    DataValidationError
        A file breaks a validation rule (message names file, row, column and rule).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise MissingDataError(f"data directory not found: {root} (run 'xmargin data sync')")
    wanted = None if symbols is None else [s.upper() for s in symbols]
    files = discover(root, wanted)
    spot_symbols = [f.symbol for f in files if f.spec.kind == SPOT.kind]
    for symbol in wanted or []:
        if symbol not in spot_symbols:
            raise MissingDataError(
                f"{SPOT.folder}/{SPOT.filename(symbol)}: file not found in {root} "
                f"(no spot history for symbol {symbol})"
            )
    order = wanted or spot_symbols
    sources: dict[str, dict[str, pd.DataFrame]] = {
        spec.kind: {} for spec in (SPOT, PERP, MARK, FUNDING, DVOL, OPTIONS)
    }
    rows: list[dict[str, object]] = []
    snapshots: dict[str, list[Path]] = {}
    for item in sorted(files, key=lambda f: order.index(f.symbol) if f.symbol in order else 99):
        if item.spec.kind == OPTIONS.kind:
            snapshots.setdefault(item.symbol, []).append(item.path)
            continue
        if item.spec.kind not in sources:
            continue
        frame, row = _series(root, item.spec, item.path, item.symbol, use_cache)
        sources[item.spec.kind][item.symbol] = slice_time(frame, start, end)
        rows.append(row)
    for symbol, paths in snapshots.items():
        sources[OPTIONS.kind][symbol] = _options(root, paths, start, end, use_cache)
    return MarketHistory(
        spot=sources["spot"],
        perp=sources["perp"],
        mark=sources["mark"],
        funding=sources["funding"],
        dvol=sources["dvol"],
        options=sources["options"],
        report=pd.DataFrame(rows),
    )
