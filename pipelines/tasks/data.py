"""Tasks of the data steps: digest, sync, load and validate history, daily features."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.tasks.common import IO_BACKOFF, IO_RETRIES, frame_digest

if TYPE_CHECKING:
    from features.history import MarketHistory


@task(
    name="digest-market-data",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def digest_market_data(data_dir: Path, symbols: Sequence[str]) -> str:
    """SHA-256 over the SHA-256 of every data file of ``symbols`` (the run's data digest)."""
    from features.cache import file_digest
    from features.layout import discover, relative_name

    files = sorted(discover(data_dir, list(symbols)), key=lambda f: str(f.path))
    digest = hashlib.sha256()
    for item in files:
        digest.update(f"{relative_name(item.path, data_dir)}:{file_digest(item.path)}\n".encode())
    get_run_logger().info("Data digest over %d files: %s", len(files), digest.hexdigest()[:16])
    return digest.hexdigest()


@task(
    name="load-market-history",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def load_history(
    data_dir: Path, symbols: Sequence[str], start: dt.date, end: dt.date | None
) -> MarketHistory:
    """Load and validate hourly history (``features.history.load_market_history``)."""
    from features.history import load_market_history

    end_ts = None if end is None else pd.Timestamp(end, tz="UTC") + pd.Timedelta(hours=23)
    history = load_market_history(data_dir, list(symbols), pd.Timestamp(start, tz="UTC"), end_ts)
    log = get_run_logger()
    for symbol in history.symbols:
        log.info("%s: %d hourly spot bars loaded", symbol, len(history.spot[symbol]))
    report = history.report
    if not report.empty:
        for column in ("missing", "missing_bars", "dropped"):
            if column in report.columns:
                log.info(
                    "Cleaning: %s = %d across %d files",
                    column,
                    int(report[column].sum()),
                    len(report),
                )
    return history


@task(name="build-daily-panel", cache_policy=NO_CACHE)
def build_panel(history: MarketHistory, symbols: Sequence[str]) -> pd.DataFrame:
    """Daily realized measures and features (``features.matrix.build_daily_panel``)."""
    from features.matrix import build_daily_panel

    panel = build_daily_panel(history, list(symbols))
    get_run_logger().info(
        "Daily panel: %d rows × %d columns for %s", len(panel), panel.shape[1], ", ".join(symbols)
    )
    return panel


@task(name="resolve-as-of", cache_policy=NO_CACHE)
def resolve_as_of(panel: pd.DataFrame, as_of: dt.date | None) -> dt.date:
    """The as-of date: the one asked for, or the last day every symbol has a complete bar set."""
    dates = panel.index.get_level_values("date")
    complete = ~panel["incomplete"].astype(bool) if "incomplete" in panel else dates.notna()
    last_per_symbol = (
        pd.Series(dates[complete]).groupby(panel.index.get_level_values("symbol")[complete]).max()
    )
    last_common = pd.Timestamp(last_per_symbol.min()).date()
    if as_of is None:
        get_run_logger().info("As-of date not given: using %s, the last complete day", last_common)
        return last_common
    if as_of > last_common:
        raise ValueError(
            f"--as-of {as_of} is after the last complete day of the data ({last_common})"
        )
    return as_of


@task(name="panel-digest", cache_policy=NO_CACHE)
def panel_digest(panel: pd.DataFrame) -> str:
    """Digest of the daily panel (the key of cached walk-forward results)."""
    return frame_digest(panel)


@task(
    name="sync-market-data",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def sync_market_data(data_dir: Path, symbols: Sequence[str]) -> int:
    """Refresh the data folder from the local mirror (``features.sync.sync_from_mirror``)."""
    from features.errors import MissingDataError
    from features.sync import default_mirror, sync_from_mirror

    mirror = default_mirror()
    if mirror is None:
        raise MissingDataError(
            "[data] sync = true but no mirror folder (../shared/data) exists; run "
            "'xmargin data sync --source ccxt' or set sync = false"
        )
    result = sync_from_mirror(mirror, data_dir, list(symbols))
    get_run_logger().info(
        "Synced %d files from %s: %d copied, %d unchanged",
        result.total,
        mirror,
        len(result.copied),
        len(result.unchanged),
    )
    return result.total
