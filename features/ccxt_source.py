"""Download market history from the exchanges through ccxt (resumable, incremental).

Series and endpoints (all public, no keys):

* Binance spot hourly klines — ``binance.fetch_ohlcv('BTC/USDT', '1h', since, limit)``;
* Binance USDⓈ-M perpetual hourly klines — ``binanceusdm.fetch_ohlcv('BTC/USDT:USDT', ...)``;
* mark-price klines — ``binanceusdm.fetch_mark_ohlcv(...)`` (``params={'price': 'mark'}``);
* funding rates — ``binanceusdm.fetch_funding_rate_history('BTC/USDT:USDT', since, limit)``;
* Deribit DVOL daily OHLC — ``deribit.public_get_get_volatility_index_data`` (ccxt's
  ``fetch_volatility_history`` is *historical* volatility, not DVOL);
* a Deribit option-chain snapshot — ``deribit.public_get_get_book_summary_by_currency``.

Each series is appended to its file in the data directory: the download starts one bar after
the last stored timestamp, only completed bars are kept, rows are de-duplicated on timestamp,
the merged series is validated, and the file is rewritten atomically after every page. An
interrupted download therefore resumes where it stopped without duplicates. Network errors
(``ccxt.NetworkError``: timeouts, rate limits, DDoS protection, exchange unavailable) are
retried with exponential backoff; ccxt's own rate limiter (``enableRateLimit``) spaces calls.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from features.layout import DVOL, FUNDING, MARK, OPTIONS, PERP, SPOT, SYMBOLS, SourceSpec
from features.validation import TIMESTAMP_FORMAT, load_validated, validate_frame

log = logging.getLogger(__name__)

T = TypeVar("T")

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
#: Where a first download starts (Binance spot opened in July 2017).
DEFAULT_START = pd.Timestamp("2017-07-01", tz="UTC")
#: Underlyings with a Deribit DVOL index and option chain.
DERIBIT_SYMBOLS: tuple[str, ...] = ("BTC", "ETH")


def write_series(path: Path, frame: pd.DataFrame) -> None:
    """Write a frame as a deterministic gzip CSV (gzip mtime 0), atomically.

    ``timestamp`` (if present) is written as ``YYYY-MM-DDTHH:MM:SSZ``; floats use the
    shortest representation that round-trips.
    """
    out = frame.copy()
    if "timestamp" in out.columns:
        out["timestamp"] = pd.DatetimeIndex(out["timestamp"]).strftime(TIMESTAMP_FORMAT)
    text = out.to_csv(index=False, lineterminator="\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(text.encode())
    os.replace(tmp, path)


def _from_ms(values: Iterable[int]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(list(values), dtype=np.int64), unit="ms"))


@dataclass
class CcxtDownloader:
    """Incremental downloader over ccxt exchange objects.

    Parameters
    ----------
    data_dir:
        Data directory to append to.
    spot, perp, deribit:
        ccxt exchanges (``ccxt.binance``, ``ccxt.binanceusdm``, ``ccxt.deribit``) or objects
        with the same methods; ``None`` skips their series.
    sleep:
        Called with the backoff delay in seconds (tests pass a recorder: nothing sleeps).
    now_ms:
        Current time in epoch milliseconds (bars not closed by then are not stored).
    max_retries:
        Retries per call on ``ccxt.NetworkError`` before giving up.
    backoff, max_backoff:
        Delay before retry k is ``min(backoff · 2**k, max_backoff)`` seconds.
    page_limit:
        Rows requested per call.
    start:
        Where a series with no file yet starts.
    """

    data_dir: Path
    spot: Any = None
    perp: Any = None
    deribit: Any = None
    sleep: Callable[[float], None] = time.sleep
    now_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    page_limit: int = 1000
    start: pd.Timestamp = DEFAULT_START

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import ccxt

        for attempt in range(self.max_retries + 1):
            try:
                return fn(*args, **kwargs)
            except ccxt.NetworkError as exc:
                if attempt == self.max_retries:
                    raise
                delay = min(self.backoff * 2**attempt, self.max_backoff)
                log.warning("%s failed (%s); retry %d in %.1fs", fn, exc, attempt + 1, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    # -- storage -----------------------------------------------------------------------

    def _existing(self, spec: SourceSpec, symbol: str) -> pd.DataFrame:
        path = spec.path(self.data_dir, symbol)
        if not path.is_file():
            return pd.DataFrame(columns=list(spec.columns))
        return load_validated(path, spec, path.relative_to(self.data_dir).as_posix())

    def _since_ms(self, existing: pd.DataFrame, step_ms: int) -> int:
        if existing.empty:
            return int(self.start.value // 1_000_000)
        last = pd.Timestamp(existing["timestamp"].iloc[-1])
        return int(last.value // 1_000_000) + step_ms

    def _append(
        self, spec: SourceSpec, symbol: str, existing: pd.DataFrame, new: pd.DataFrame
    ) -> pd.DataFrame:
        """Merge, de-duplicate (stored rows win), validate and write; return the merge."""
        path = spec.path(self.data_dir, symbol)
        new = new.copy()
        new["timestamp"] = pd.DatetimeIndex(new["timestamp"]).tz_localize("UTC").as_unit("ns")
        frames = [f for f in (existing, new[list(spec.columns)]) if not f.empty]
        merged = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        size = len(merged)
        merged = merged.drop_duplicates("timestamp", keep="first")
        if len(merged) < size:
            log.info(
                "%s %s: %d re-sent rows already stored, not duplicated",
                spec.kind,
                symbol,
                size - len(merged),
            )
        merged = merged.sort_values("timestamp", kind="stable").reset_index(drop=True)
        validate_frame(merged, spec, path.relative_to(self.data_dir).as_posix())
        write_series(path, merged)
        return merged

    # -- series --------------------------------------------------------------------------

    def sync_ohlcv(self, spec: SourceSpec, symbol: str) -> int:
        """Append hourly klines (spot, perp or mark) for ``symbol``; return rows added."""
        exchange = self.spot if spec.kind == SPOT.kind else self.perp
        if exchange is None:
            return 0
        market = f"{symbol}/USDT" if spec.kind == SPOT.kind else f"{symbol}/USDT:USDT"
        fetch = exchange.fetch_mark_ohlcv if spec.kind == MARK.kind else exchange.fetch_ohlcv
        existing = self._existing(spec, symbol)
        before = len(existing)
        since = self._since_ms(existing, HOUR_MS)
        closed_before = self.now_ms() - HOUR_MS  # a bar opened after this is still running
        while since <= closed_before:
            rows = self._call(fetch, market, "1h", since, self.page_limit)
            rows = [r for r in rows if since <= int(r[0]) <= closed_before]
            if not rows:
                break
            page = pd.DataFrame(
                [r[:6] for r in rows],
                columns=["ms", "open", "high", "low", "close", "volume"],
            )
            page["timestamp"] = _from_ms(page["ms"])
            existing = self._append(spec, symbol, existing, page)
            since = int(page["ms"].max()) + HOUR_MS
        added = len(existing) - before
        log.info("%s %s: %d new bars", spec.kind, symbol, added)
        return added

    def sync_funding(self, symbol: str) -> int:
        """Append funding rates (timestamps floored to the hour); return rows added."""
        if self.perp is None:
            return 0
        existing = self._existing(FUNDING, symbol)
        before = len(existing)
        since = self._since_ms(existing, HOUR_MS)
        now = self.now_ms()
        while since <= now:
            rows = self._call(
                self.perp.fetch_funding_rate_history, f"{symbol}/USDT:USDT", since, self.page_limit
            )
            rows = [r for r in rows if r.get("timestamp") is not None and r["timestamp"] >= since]
            if not rows:
                break
            ms = np.array([int(r["timestamp"]) for r in rows], dtype=np.int64)
            page = pd.DataFrame(
                {
                    "timestamp": _from_ms(ms - ms % HOUR_MS),  # Binance adds ms of jitter
                    "funding_rate": [float(r["fundingRate"]) for r in rows],
                }
            )
            existing = self._append(FUNDING, symbol, existing, page)
            since = int(ms.max()) + 1
        added = len(existing) - before
        log.info("funding %s: %d new rates", symbol, added)
        return added

    def sync_dvol(self, symbol: str) -> int:
        """Append daily DVOL OHLC (percent) for ``symbol``; return rows added."""
        if self.deribit is None:
            return 0
        existing = self._existing(DVOL, symbol)
        before = len(existing)
        since = self._since_ms(existing, DAY_MS)
        now = self.now_ms()
        end = now - now % DAY_MS - 1  # completed days only
        # Deribit pages backwards (the continuation is the next, older, end timestamp), so
        # the pages are collected first and appended once: a stop mid-way stores nothing
        # and cannot leave a hole between the stored and the downloaded days.
        pages: list[list[Any]] = []
        while since <= end:
            request = {
                "currency": symbol,
                "start_timestamp": since,
                "end_timestamp": end,
                "resolution": "1D",
            }
            response = self._call(self.deribit.public_get_get_volatility_index_data, request)
            result = response.get("result") or {}
            data = [row for row in result.get("data") or [] if since <= int(row[0]) <= end]
            pages.extend(data)
            continuation = result.get("continuation")
            if not data or continuation is None:
                break
            end = int(continuation)
        if pages:
            page = pd.DataFrame(
                [row[:5] for row in pages], columns=["ms", "open", "high", "low", "close"]
            )
            page["timestamp"] = _from_ms(page["ms"].astype(np.int64))
            for column in ("open", "high", "low", "close"):
                page[column] = page[column].astype(float)
            existing = self._append(DVOL, symbol, existing, page)
        added = len(existing) - before
        log.info("dvol %s: %d new days", symbol, added)
        return added

    def snapshot_options(self, symbol: str) -> Path | None:
        """Save the current option chain of ``symbol`` as a new snapshot file."""
        if self.deribit is None:
            return None
        response = self._call(
            self.deribit.public_get_get_book_summary_by_currency,
            {"currency": symbol, "kind": "option"},
        )
        rows = response.get("result") or []
        if not rows:
            return None
        chain = pd.DataFrame(rows)
        parts = chain["instrument_name"].str.split("-", expand=True)
        chain["expire_date"] = parts[1]
        chain["strike_price"] = pd.to_numeric(parts[2])
        chain["option_type"] = parts[3]
        taken = pd.Timestamp(int(chain["creation_timestamp"].max()), unit="ms", tz="UTC")
        path = self.data_dir / OPTIONS.folder / OPTIONS.filename(symbol, f"{taken:%Y-%m-%dT%H%M}Z")
        name = path.relative_to(self.data_dir).as_posix()
        validate_frame(chain, OPTIONS, name)
        write_series(path, chain)
        log.info("options %s: %d quotes saved to %s", symbol, len(chain), name)
        return path

    def sync_all(self, symbols: Iterable[str] | None = None) -> dict[str, int]:
        """Download every series for ``symbols``; return new rows per series name."""
        import ccxt

        report: dict[str, int] = {}
        for symbol in symbols or SYMBOLS:
            for spec in (SPOT, PERP, MARK):
                try:
                    report[f"{spec.kind} {symbol}"] = self.sync_ohlcv(spec, symbol)
                except ccxt.BadSymbol:
                    log.warning("%s %s: market not listed, skipped", spec.kind, symbol)
            try:
                report[f"funding {symbol}"] = self.sync_funding(symbol)
            except ccxt.BadSymbol:
                log.warning("funding %s: market not listed, skipped", symbol)
            if symbol in DERIBIT_SYMBOLS and self.deribit is not None:
                report[f"dvol {symbol}"] = self.sync_dvol(symbol)
                snapshot = self.snapshot_options(symbol)
                report[f"options {symbol}"] = 0 if snapshot is None else 1
        return report


def download_all(data_dir: str | Path, symbols: Iterable[str] | None = None) -> dict[str, int]:
    """Download or update every series from Binance and Deribit (network required)."""
    import ccxt

    options = {"enableRateLimit": True, "timeout": 30_000}
    downloader = CcxtDownloader(
        Path(data_dir),
        spot=ccxt.binance(options),
        perp=ccxt.binanceusdm(options),
        deribit=ccxt.deribit(options),
    )
    return downloader.sync_all(symbols)
