"""The ccxt download path against fake exchanges serving real rows in ccxt's shapes.

The fakes reproduce the documented unified structures of ccxt 4.x:

* ``fetch_ohlcv(symbol, timeframe, since, limit, params)`` → ``[[ms, o, h, l, c, v], ...]``,
  ascending from ``since``, at most ``limit`` rows (Binance klines);
* ``fetch_mark_ohlcv`` → ``fetch_ohlcv(..., params={'price': 'mark'})`` (ccxt's base class);
* ``fetch_funding_rate_history(symbol, since, limit)`` → dicts with ``info, symbol,
  fundingRate, timestamp, datetime`` (timestamps carry Binance's millisecond jitter);
* Deribit ``public_get_get_volatility_index_data`` → ``{'result': {'data': [[ms, o, h, l, c],
  ...], 'continuation': ms | None}}``, newest page first;
* Deribit ``public_get_get_book_summary_by_currency`` → ``{'result': [summary dicts]}``.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pandas as pd
import pytest

from features.ccxt_source import CcxtDownloader
from features.layout import DVOL, FUNDING, MARK, OPTIONS, PERP, SPOT
from features.validation import load_validated

HOUR_MS = 3_600_000


def real_frame(shared: Path, relative: str, rows: int | None = None) -> pd.DataFrame:
    frame = pd.read_csv(shared / relative, nrows=rows)
    if "timestamp" in frame.columns:
        stamps = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("ms")
        frame["ms"] = stamps.astype("int64")
    return frame


def text_of(path: Path) -> str:
    with gzip.open(path, "rt") as handle:
        return handle.read()


def head_text(shared: Path, relative: str, rows: int) -> str:
    with gzip.open(shared / relative, "rt") as handle:
        return "".join(line for _, line in zip(range(rows + 1), handle, strict=False))


class FakeBinance:
    """Serves klines and funding from real rows, like ccxt's binance/binanceusdm."""

    def __init__(
        self,
        klines: pd.DataFrame,
        mark: pd.DataFrame | None = None,
        funding: pd.DataFrame | None = None,
    ) -> None:
        self.klines, self.mark, self.funding = klines, mark, funding
        self.calls: list[tuple[str, int | None, dict[str, Any]]] = []
        self.failures: list[BaseException] = []  # raised, in order, before serving

    def _maybe_fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[list[float]]:
        params = params or {}
        self.calls.append(("fetch_ohlcv", since, params))
        self._maybe_fail()
        assert timeframe == "1h"
        source = self.mark if params.get("price") == "mark" else self.klines
        assert source is not None
        rows = source[source["ms"] >= (since or 0)].head(limit or 500)
        has_volume = "volume" in rows.columns
        return [
            [int(r.ms), r.open, r.high, r.low, r.close, r.volume if has_volume else None]
            for r in rows.itertuples()
        ]

    def fetch_mark_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[list[float]]:
        mark = {"price": "mark", **(params or {})}
        return self.fetch_ohlcv(symbol, timeframe, since, limit, mark)

    def fetch_funding_rate_history(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        self.calls.append(("fetch_funding_rate_history", since, params or {}))
        self._maybe_fail()
        assert self.funding is not None and symbol is not None
        jittered = self.funding.assign(ms=self.funding["ms"] + 7)  # Binance fundingTime jitter
        rows = jittered[jittered["ms"] >= (since or 0)].head(limit or 100)
        return [
            {
                "info": {
                    "symbol": symbol.split("/")[0] + "USDT",
                    "fundingRate": repr(r.funding_rate),
                    "fundingTime": str(int(r.ms)),
                },
                "symbol": symbol,
                "fundingRate": float(r.funding_rate),
                "timestamp": int(r.ms),
                "datetime": pd.Timestamp(int(r.ms), unit="ms", tz="UTC").isoformat(),
            }
            for r in rows.itertuples()
        ]


class FakeDeribit:
    """Serves DVOL (newest page first, with continuation) and a book summary."""

    def __init__(self, dvol: pd.DataFrame, chain: pd.DataFrame | None = None, page: int = 500):
        self.dvol, self.chain, self.page = dvol, chain, page
        self.requests: list[dict[str, Any]] = []

    def public_get_get_volatility_index_data(self, params: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(dict(params))
        assert params["resolution"] == "1D"
        sel = self.dvol[
            (self.dvol["ms"] >= params["start_timestamp"])
            & (self.dvol["ms"] <= params["end_timestamp"])
        ]
        newest = sel.tail(self.page)
        more = len(sel) > len(newest)
        return {
            "jsonrpc": "2.0",
            "result": {
                "data": [[int(r.ms), r.open, r.high, r.low, r.close] for r in newest.itertuples()],
                "continuation": int(newest["ms"].iloc[0]) - 1 if more else None,
            },
            "usIn": 1,
            "usOut": 2,
            "usDiff": 1,
            "testnet": False,
        }

    def public_get_get_book_summary_by_currency(self, params: dict[str, Any]) -> dict[str, Any]:
        assert params == {"currency": "ETH", "kind": "option"}
        assert self.chain is not None
        raw = self.chain.drop(
            columns=["expire_date", "strike_price", "option_type", "mark_iv_b76_derived"]
        )
        records = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
            for rec in raw.to_dict("records")
        ]
        return {"jsonrpc": "2.0", "result": records, "testnet": False}


SPOT_FILE = "binance_spot_1h/BTCUSDT_1h.csv.gz"


def downloader(tmp_path: Path, now_ms: int, **kwargs: Any) -> CcxtDownloader:
    sleeps: list[float] = []
    return CcxtDownloader(
        tmp_path,
        sleep=sleeps.append,
        now_ms=lambda: now_ms,
        start=pd.Timestamp("2018-01-01", tz="UTC"),
        **kwargs,
    )


def test_fresh_spot_download_reproduces_the_real_file(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    real = real_frame(shared_data_dir, SPOT_FILE, 2500)
    fake = FakeBinance(real)
    now = int(real["ms"].iloc[-1]) + HOUR_MS  # the last real bar has just closed
    added = downloader(tmp_path, now, spot=fake, page_limit=1000).sync_ohlcv(SPOT, "BTC")
    assert added == 2500
    assert [c[1] for c in fake.calls][:3] == [
        int(real["ms"].iloc[0]),
        int(real["ms"].iloc[999]) + HOUR_MS,
        int(real["ms"].iloc[1999]) + HOUR_MS,
    ]
    # Byte-for-byte the same CSV text as the real file's first 2500 rows.
    assert text_of(tmp_path / SPOT_FILE) == head_text(shared_data_dir, SPOT_FILE, 2500)


def test_running_bar_is_not_stored(shared_data_dir: Path, tmp_path: Path) -> None:
    real = real_frame(shared_data_dir, SPOT_FILE, 300)
    now = int(real["ms"].iloc[199]) + HOUR_MS // 2  # bar 199 is still running
    dl = downloader(tmp_path, now, spot=FakeBinance(real))
    assert dl.sync_ohlcv(SPOT, "BTC") == 199


def test_interrupted_download_resumes_without_duplicates(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    real = real_frame(shared_data_dir, SPOT_FILE, 2500)
    fake = FakeBinance(real)
    now = int(real["ms"].iloc[-1]) + HOUR_MS
    dl = downloader(tmp_path, now, spot=fake, page_limit=1000)
    calls = {"n": 0}
    serve = fake.fetch_ohlcv

    def crash_on_third(*args: Any, **kwargs: Any) -> list[list[float]]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return serve(*args, **kwargs)

    fake.fetch_ohlcv = crash_on_third  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        dl.sync_ohlcv(SPOT, "BTC")
    partial = load_validated(tmp_path / SPOT_FILE, SPOT)
    assert len(partial) == 2000
    assert not list(tmp_path.rglob("*.partial"))
    fake.fetch_ohlcv = serve  # type: ignore[method-assign]
    fake.calls.clear()
    assert dl.sync_ohlcv(SPOT, "BTC") == 500
    assert fake.calls[0][1] == int(real["ms"].iloc[1999]) + HOUR_MS  # resumes after the last
    assert text_of(tmp_path / SPOT_FILE) == head_text(shared_data_dir, SPOT_FILE, 2500)
    # Nothing new: a re-run adds nothing and does not duplicate the overlap.
    assert dl.sync_ohlcv(SPOT, "BTC") == 0


def test_overlapping_pages_are_deduplicated(shared_data_dir: Path, tmp_path: Path) -> None:
    real = real_frame(shared_data_dir, SPOT_FILE, 600)
    fake = FakeBinance(real)
    serve = fake.fetch_ohlcv

    def overlapping(symbol: str, tf: str, since: int, limit: int, *a: Any) -> list[list[float]]:
        return serve(symbol, tf, since - 5 * HOUR_MS, limit)  # repeats 5 stored bars

    fake.fetch_ohlcv = overlapping  # type: ignore[method-assign,assignment]
    now = int(real["ms"].iloc[-1]) + HOUR_MS
    dl = downloader(tmp_path, now, spot=fake, page_limit=250)
    assert dl.sync_ohlcv(SPOT, "BTC") == 600
    stored = load_validated(tmp_path / SPOT_FILE, SPOT)  # validation rejects duplicates
    assert stored["timestamp"].is_unique and len(stored) == 600


def test_network_errors_are_retried_with_backoff(shared_data_dir: Path, tmp_path: Path) -> None:
    real = real_frame(shared_data_dir, SPOT_FILE, 100)
    fake = FakeBinance(real)
    sleeps: list[float] = []
    now = int(real["ms"].iloc[-1]) + HOUR_MS
    dl = CcxtDownloader(tmp_path, spot=fake, sleep=sleeps.append, now_ms=lambda: now)
    dl.start = pd.Timestamp("2018-01-01", tz="UTC")
    fake.failures = [ccxt.RequestTimeout("timeout"), ccxt.RateLimitExceeded("429")]
    assert dl.sync_ohlcv(SPOT, "BTC") == 100
    assert sleeps == [1.0, 2.0]
    # Past max_retries the error propagates; a non-network error is not retried.
    fake.failures = [ccxt.NetworkError("down")] * 4
    dl.max_retries = 3
    (tmp_path / SPOT_FILE).unlink()
    sleeps.clear()
    with pytest.raises(ccxt.NetworkError):
        dl.sync_ohlcv(SPOT, "BTC")
    assert sleeps == [1.0, 2.0, 4.0]
    fake.failures = [ccxt.BadSymbol("no such market")]
    with pytest.raises(ccxt.BadSymbol):
        dl.sync_ohlcv(SPOT, "BTC")
    assert sleeps == [1.0, 2.0, 4.0]


def test_perp_mark_and_funding(shared_data_dir: Path, tmp_path: Path) -> None:
    perp = real_frame(shared_data_dir, "binance_usdm_perp_1h/BTCUSDT_perp_1h.csv.gz", 400)
    mark = real_frame(shared_data_dir, "binance_usdm_mark_1h/BTCUSDT_mark_1h.csv.gz", 400)
    funding = real_frame(shared_data_dir, "binance_usdm_funding_8h/BTCUSDT_funding_8h.csv.gz", 300)
    fake = FakeBinance(perp, mark=mark, funding=funding)
    now = int(mark["ms"].iloc[-1]) + HOUR_MS
    dl = downloader(tmp_path, now, perp=fake, page_limit=150)
    assert dl.sync_ohlcv(PERP, "BTC") == 400
    assert dl.sync_ohlcv(MARK, "BTC") == 400
    assert any(params == {"price": "mark"} for _, _, params in fake.calls)
    assert dl.sync_funding("BTC") == 300
    for spec, rows in ((PERP, 400), (MARK, 400), (FUNDING, 300)):
        relative = spec.path(tmp_path, "BTC").relative_to(tmp_path).as_posix()
        assert text_of(tmp_path / relative) == head_text(shared_data_dir, relative, rows)


def test_dvol_backward_pages_and_option_snapshot(shared_data_dir: Path, tmp_path: Path) -> None:
    dvol = real_frame(shared_data_dir, "deribit_dvol_1d/BTC_DVOL_1d.csv.gz")
    name = "deribit_options_snapshots/ETH_options_2024-01-08T1119Z.csv.gz"
    chain = pd.read_csv(shared_data_dir / name)
    fake = FakeDeribit(dvol, chain, page=500)
    now = int(dvol["ms"].iloc[-1]) + 86_400_000 + 5  # the last day has closed
    dl = downloader(tmp_path, now, deribit=fake)
    dl.start = pd.Timestamp("2021-01-01", tz="UTC")
    assert dl.sync_dvol("BTC") == len(dvol) == 1379
    assert len(fake.requests) == 3  # 1379 days in pages of 500, newest first
    relative = DVOL.path(tmp_path, "BTC").relative_to(tmp_path).as_posix()
    assert text_of(tmp_path / relative) == text_of(shared_data_dir / relative)
    assert dl.sync_dvol("BTC") == 0  # incremental: nothing new
    path = dl.snapshot_options("ETH")
    assert path is not None and path.name == "ETH_options_2024-01-08T1119Z.csv.gz"
    saved = load_validated(path, OPTIONS)
    assert len(saved) == 684
    np.testing.assert_array_equal(saved["instrument_name"], chain["instrument_name"])
    np.testing.assert_array_equal(saved["strike_price"], chain["strike_price"])
    np.testing.assert_array_equal(saved["option_type"], chain["option_type"])
    np.testing.assert_array_equal(saved["expire_date"], chain["expire_date"])
    np.testing.assert_allclose(saved["mark_price"], chain["mark_price"])


def test_sync_all_skips_unlisted_markets(shared_data_dir: Path, tmp_path: Path) -> None:
    spot = real_frame(shared_data_dir, SPOT_FILE, 48)
    perp = real_frame(shared_data_dir, "binance_usdm_perp_1h/BTCUSDT_perp_1h.csv.gz", 48)
    mark = real_frame(shared_data_dir, "binance_usdm_mark_1h/BTCUSDT_mark_1h.csv.gz", 48)
    funding = real_frame(shared_data_dir, "binance_usdm_funding_8h/BTCUSDT_funding_8h.csv.gz", 6)
    dvol = real_frame(shared_data_dir, "deribit_dvol_1d/BTC_DVOL_1d.csv.gz", 10)
    chain = pd.read_csv(
        shared_data_dir / "deribit_options_snapshots/ETH_options_2024-01-08T1119Z.csv.gz"
    )
    perp_fake = FakeBinance(perp, mark=mark, funding=funding)
    serve_perp = perp_fake.fetch_ohlcv

    def only_btc(symbol: str, *args: Any, **kwargs: Any) -> list[list[float]]:
        if not symbol.startswith("BTC/"):
            raise ccxt.BadSymbol(f"binanceusdm does not have market symbol {symbol}")
        return serve_perp(symbol, *args, **kwargs)

    perp_fake.fetch_ohlcv = only_btc  # type: ignore[method-assign]
    deribit = FakeDeribit(dvol, chain)
    deribit.public_get_get_book_summary_by_currency = (  # type: ignore[method-assign]
        lambda params: {"result": []}
    )
    now = int(dvol["ms"].iloc[-1]) + 86_400_000 + 1
    dl = downloader(tmp_path, now, spot=FakeBinance(spot), perp=perp_fake, deribit=deribit)
    dl.start = pd.Timestamp("2017-01-01", tz="UTC")
    report = dl.sync_all(["BTC"])
    assert report == {
        "spot BTC": 48,
        "perp BTC": 48,
        "mark BTC": 48,
        "funding BTC": 6,
        "dvol BTC": 10,
        "options BTC": 0,
    }
    # A market that is not listed is skipped (logged), the others still download.
    dl.spot = None
    report = dl.sync_all(["XRP"])
    assert "perp XRP" not in report and "mark XRP" not in report
    assert report["spot XRP"] == 0
