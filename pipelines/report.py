"""The per-run HTML report: one self-contained file with embedded PNG charts.

Charts are drawn with matplotlib's object API (no pyplot, so no global state and no GUI
backend) and embedded as base64 PNGs; the same PNG bytes are returned so the flow can log
them as MLflow artifacts. Inputs are plain frames with documented columns, so the report
knows nothing of how they were produced.
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

FORECAST_COLUMNS = ("symbol", "date", "forecast_var", "realized_var")
MARGIN_COLUMNS = ("symbol", "date", "im_long", "im_short", "mm_long", "mm_short", "move")
CHANGE_COLUMNS = ("symbol", "parameter", "previous", "current")


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows; every frame is optional (an empty frame is skipped).

    Attributes
    ----------
    as_of
        The run's as-of date (``YYYY-MM-DD``).
    champion
        Name of the selected forecaster.
    forecasts
        Columns ``symbol, date, forecast_var, realized_var``: the champion's h-day variance
        forecast made at the close of ``date`` and the realized variance over the same days
        (decimal variance per horizon).
    margin_path
        Columns ``symbol, date, im_long, im_short, mm_long, mm_short, move``: the IM and MM
        scan ranges in force at the close of ``date`` (decimal fractions of price; ``long`` is
        the down-move a long must survive, ``short`` the up-move) and the realized h-day log
        move after it.
    metrics
        The model comparison table (``model, symbol, horizon, n, qlike, mse, ...``).
    backtest
        The backtest summary (``model, symbol, level, side, n, breaches, ..., zone, ...``).
    changes
        Columns ``symbol, parameter, previous, current``: parameter changes against the
        previous file (``previous`` is NaN on a first run).
    notes
        Lines a risk officer should read first: fallbacks, bounds that bit, counts.
    """

    as_of: str
    champion: str
    forecasts: pd.DataFrame = field(default_factory=pd.DataFrame)
    margin_path: pd.DataFrame = field(default_factory=pd.DataFrame)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    backtest: pd.DataFrame = field(default_factory=pd.DataFrame)
    changes: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: tuple[str, ...] = ()


def _png(fig: Figure) -> bytes:
    for ax in fig.axes:  # short, non-overlapping date labels on every time axis
        locator = mdates.AutoDateLocator(maxticks=6)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    buffer = io.BytesIO()
    # No timestamp metadata: the same data gives the same bytes.
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    return buffer.getvalue()


def _dates(values: pd.Series) -> np.ndarray:
    """UTC dates as naive ``datetime64`` (matplotlib converts these fastest)."""
    index = pd.DatetimeIndex(values)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.to_numpy()


def _has(frame: pd.DataFrame, columns: tuple[str, ...]) -> bool:
    return not frame.empty and all(c in frame.columns for c in columns)


def _symbol_axes(n: int, title: str) -> tuple[Figure, list[Axes]]:
    """One panel per symbol in two columns, shared time axis (fixed margins: fast layout)."""
    rows = (n + 1) // 2
    fig = Figure(figsize=(10.0, 0.6 + 2.1 * rows))
    grid = fig.subplots(rows, 2, squeeze=False, sharex=True)
    fig.subplots_adjust(
        left=0.07,
        right=0.99,
        top=1 - 0.45 / (0.6 + 2.1 * rows),
        bottom=0.08,
        hspace=0.25,
        wspace=0.15,
    )
    axes = grid.ravel().tolist()
    for extra in axes[n:]:
        extra.set_visible(False)
    fig.suptitle(title)
    return fig, axes[:n]


def forecast_chart(forecasts: pd.DataFrame) -> bytes | None:
    """Forecast vs realized volatility per symbol (annualised percent, for reading only)."""
    if not _has(forecasts, FORECAST_COLUMNS):
        return None
    symbols = sorted(forecasts["symbol"].unique())
    fig, axes = _symbol_axes(len(symbols), "Forecast vs realized volatility (annualised %)")
    for ax, symbol in zip(axes, symbols, strict=True):
        rows = forecasts[forecasts["symbol"] == symbol].sort_values("date")
        scale = 100.0 * np.sqrt(365.0)
        dates = _dates(rows["date"])
        ax.plot(
            dates,
            np.sqrt(rows["realized_var"].to_numpy(float)) * scale,
            lw=0.8,
            color="0.6",
            label="realized",
        )
        ax.plot(
            dates,
            np.sqrt(rows["forecast_var"].to_numpy(float)) * scale,
            lw=1.2,
            color="C0",
            label="forecast",
        )
        ax.set_ylabel(symbol)
        ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def im_breaches(margin_path: pd.DataFrame) -> np.ndarray:
    """Rows where the realized move beat the IM scan range on its side.

    A long loses ``-(e^m - 1)`` on a log move ``m`` and a short ``e^m - 1``; a breach is a loss
    above the scan range of that side. Unknown moves or ranges are not breaches.
    """
    simple = np.expm1(margin_path["move"].to_numpy(dtype=float))
    long = margin_path["im_long"].to_numpy(dtype=float)
    short = margin_path["im_short"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return np.asarray((-simple > long) | (simple > short), dtype=bool)


def margin_chart(margin_path: pd.DataFrame) -> bytes | None:
    """IM and MM scan ranges against realized moves (simple returns); IM breaches in red."""
    if not _has(margin_path, MARGIN_COLUMNS):
        return None
    symbols = sorted(margin_path["symbol"].unique())
    fig, axes = _symbol_axes(len(symbols), "Scan range vs realized move (% of price)")
    for ax, symbol in zip(axes, symbols, strict=True):
        rows = margin_path[margin_path["symbol"] == symbol].sort_values("date")
        dates = _dates(rows["date"])
        move = 100.0 * np.expm1(rows["move"].to_numpy(dtype=float))
        im_low = -100.0 * rows["im_long"].to_numpy(dtype=float)
        im_high = 100.0 * rows["im_short"].to_numpy(dtype=float)
        ax.fill_between(dates, im_low, im_high, color="C0", alpha=0.15, label="IM range")
        ax.plot(dates, im_low, color="C0", lw=0.6)
        ax.plot(dates, im_high, color="C0", lw=0.6)
        ax.plot(
            dates,
            -100.0 * rows["mm_long"].to_numpy(dtype=float),
            color="C1",
            lw=0.7,
            label="MM range",
        )
        ax.plot(dates, 100.0 * rows["mm_short"].to_numpy(dtype=float), color="C1", lw=0.7)
        ax.plot(dates, move, color="0.3", lw=0.6, label="realized move")
        breach = im_breaches(rows)
        ax.scatter(
            dates[breach],
            move[breach],
            color="red",
            s=14,
            zorder=3,
            label=f"IM breach ({int(breach.sum())})",
        )
        ax.set_ylabel(symbol)
        ax.legend(loc="upper left", fontsize=7, ncol=2)
    return _png(fig)


def procyclicality_chart(margin_path: pd.DataFrame) -> bytes | None:
    """Larger IM scan range of the two sides relative to its first value, all symbols."""
    if not _has(margin_path, MARGIN_COLUMNS):
        return None
    fig = Figure(figsize=(10.0, 3.2))
    fig.subplots_adjust(left=0.07, right=0.99, top=0.9, bottom=0.12)
    ax = fig.subplots()
    for symbol, rows in margin_path.sort_values("date").groupby("symbol", sort=True):
        im = rows[["im_long", "im_short"]].max(axis=1).to_numpy(dtype=float)
        valid = np.isfinite(im)
        if not valid.any():
            continue
        ax.plot(_dates(rows["date"])[valid], im[valid] / im[valid][0], lw=1.0, label=str(symbol))
    ax.axhline(1.0, color="0.5", lw=0.6)
    ax.set_title("Procyclicality: IM scan range / first value")
    ax.legend(loc="upper left", fontsize=8, ncol=6)
    return _png(fig)


def build_charts(inputs: ReportInputs) -> dict[str, bytes]:
    """Render every chart the inputs allow, as ``{file name: PNG bytes}``."""
    charts = {
        "forecast_vs_realized.png": forecast_chart(inputs.forecasts),
        "margin_vs_moves.png": margin_chart(inputs.margin_path),
        "procyclicality.png": procyclicality_chart(inputs.margin_path),
    }
    return {name: png for name, png in charts.items() if png is not None}


def _table(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    if frame.empty:
        return "<p class='empty'>none</p>"
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(
                lambda v: "" if pd.isna(v) else float_format.format(v)
            )
    return shown.to_html(index=False, escape=True, border=0, classes="grid")


def _image(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1000px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table.grid{border-collapse:collapse;font-size:.85rem}
table.grid td,table.grid th{padding:.2rem .6rem;border-bottom:1px solid #eee;text-align:right}
img{max-width:100%}.empty{color:#888}li{margin:.2rem 0}
"""


def render_report(inputs: ReportInputs, charts: dict[str, bytes] | None = None) -> str:
    """Return the report as one HTML document with the charts embedded (no external files)."""
    charts = build_charts(inputs) if charts is None else charts
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>xmargin report {html.escape(inputs.as_of)}</title><style>{_CSS}</style>",
        "</head><body>",
        f"<h1>xmargin parameters as of {html.escape(inputs.as_of)}</h1>",
        f"<p>Champion forecaster: <b>{html.escape(inputs.champion)}</b></p>",
    ]
    if inputs.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in inputs.notes)
        parts.append(f"<h2>What happened</h2><ul>{items}</ul>")
    sections = (
        ("Forecast vs realized volatility", "forecast_vs_realized.png"),
        ("Margin vs realized moves", "margin_vs_moves.png"),
        ("Procyclicality", "procyclicality.png"),
    )
    for title, name in sections:
        parts.append(f"<h2>{title}</h2>")
        parts.append(
            _image(name, charts[name]) if name in charts else "<p class='empty'>no data</p>"
        )
    parts.append("<h2>Model comparison</h2>" + _table(inputs.metrics))
    parts.append("<h2>Backtest</h2>" + _table(inputs.backtest))
    parts.append("<h2>Parameter changes</h2>" + _table(_with_change(inputs.changes)))
    parts.append("</body></html>")
    return "\n".join(parts)


def _with_change(changes: pd.DataFrame) -> pd.DataFrame:
    if not _has(changes, CHANGE_COLUMNS):
        return changes
    out = changes.copy()
    previous = pd.to_numeric(out["previous"], errors="coerce")
    current = pd.to_numeric(out["current"], errors="coerce")
    out["change_pct"] = 100.0 * (current / previous - 1.0)
    return out


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_report(inputs: ReportInputs, path: Path) -> dict[str, bytes]:
    """Write ``report.html`` atomically and return the charts (for MLflow artifacts)."""
    charts = build_charts(inputs)
    write_text_atomic(path, render_report(inputs, charts))
    return charts
