"""Tasks that write the report and the run folder ``out/<as-of>/``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import XmarginConfig
from pipelines.tasks.common import IO_BACKOFF, IO_RETRIES, csv_bytes

if TYPE_CHECKING:
    from margin.backtest import BacktestResult
    from margin.parameters import ParameterSet
    from margin.params import WrittenSet
    from pipelines.tasks.forecasting import ModelComparison


def margin_path_frame(result: BacktestResult, champion: str) -> pd.DataFrame:
    """The champion's daily IM/MM scan ranges and realized moves over the backtest window."""
    parts = []
    for (model, symbol), frame in result.margins.items():
        if model != champion:
            continue
        moves = result.moves[symbol]
        window = frame[(frame.index >= result.start) & (frame.index <= result.end)]
        parts.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "date": window.index,
                    "im_long": window["IM_long"].to_numpy(),
                    "im_short": window["IM_short"].to_numpy(),
                    "mm_long": window["MM_long"].to_numpy(),
                    "mm_short": window["MM_short"].to_numpy(),
                    "move": moves.reindex(window.index).to_numpy(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def forecast_frame(comparison: ModelComparison, horizon: int) -> pd.DataFrame:
    """The champion's out-of-sample forecasts and the realized variance, evaluation window."""
    series = comparison.forecasts[(comparison.champion, horizon)]
    frame = series.rename("forecast_var").to_frame()
    frame["realized_var"] = comparison.realized.reindex(frame.index).to_numpy()
    frame = frame.reset_index()
    start = pd.Timestamp(comparison.eval_start, tz="UTC")
    return frame[frame["date"] >= start].dropna().reset_index(drop=True)


def changes_frame(params: ParameterSet) -> pd.DataFrame:
    """Parameter changes against the previous file, as report rows."""
    rows = [
        {"symbol": c.underlying, "parameter": c.field, "previous": c.previous, "current": c.current}
        for c in params.changes
    ]
    return pd.DataFrame(rows, columns=["symbol", "parameter", "previous", "current"])


def _notes(comparison: ModelComparison, params: ParameterSet) -> tuple[str, ...]:
    notes = [comparison.selection.reason]
    for model, count in sorted(comparison.fallbacks.items()):
        if count:
            notes.append(f"{model}: {count} fit(s) fell back during the walk-forward")
    for symbol, p in sorted(params.underlyings.items()):
        if p.fallback.used:
            notes.append(f"{symbol}: parameters from {p.fallback.source} ({p.fallback.reason})")
        for e in p.apc.bounds_bit:
            notes.append(f"{symbol}: {e.rule} bit on {e.field} ({e.raw:.4f} → {e.bounded:.4f})")
    return tuple(notes)


@task(name="build-report", cache_policy=NO_CACHE)
def build_report(
    comparison: ModelComparison,
    backtest: BacktestResult,
    params: ParameterSet,
    horizon: int,
) -> tuple[str, dict[str, bytes]]:
    """Render the HTML report and its charts (``pipelines.report``)."""
    from pipelines.report import ReportInputs, build_charts, render_report

    inputs = ReportInputs(
        as_of=params.as_of.isoformat(),
        champion=comparison.champion,
        forecasts=forecast_frame(comparison, horizon),
        margin_path=margin_path_frame(backtest, comparison.champion),
        metrics=comparison.metrics,
        backtest=backtest.summary,
        changes=changes_frame(params),
        notes=_notes(comparison, params),
    )
    charts = build_charts(inputs)
    return render_report(inputs, charts), charts


@task(
    name="write-run-folder",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def write_run_folder(
    cfg: XmarginConfig,
    day: dt.date,
    published: WrittenSet,
    backtest: BacktestResult,
    comparison: ModelComparison,
    report_html: str,
) -> Path:
    """Stage ``out/<as-of>/`` (parameter files, backtest summary, metrics, report) and
    switch it in atomically (``pipelines.outputs.publish_run_folder``)."""
    from margin.backtest import SUMMARY_COLUMNS
    from pipelines.outputs import publish_run_folder

    files = {name: (published.folder / name).read_bytes() for name in published.files}
    files["backtest_summary.csv"] = csv_bytes(backtest.summary[list(SUMMARY_COLUMNS)])
    files["forecast_metrics.csv"] = csv_bytes(comparison.metrics)
    files["report.html"] = report_html.encode()
    link = publish_run_folder(cfg.out_dir, day.isoformat(), files)
    get_run_logger().info("Run folder %s → %s (%d files)", link, link.resolve().name, len(files))
    return link
