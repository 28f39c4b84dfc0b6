"""The HTML report: self-contained, every section present, breaches counted like the backtest."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.report import (
    ReportInputs,
    build_charts,
    im_breaches,
    margin_chart,
    procyclicality_chart,
    render_report,
    write_report,
)


def _inputs(seed: int = 3) -> ReportInputs:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2024-01-01", periods=90, tz="UTC")
    paths, forecasts = [], []
    for symbol in ("BTC", "ETH"):
        paths.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "date": dates,
                    "im_long": 0.05,
                    "im_short": 0.06,
                    "mm_long": 0.04,
                    "mm_short": 0.045,
                    "move": rng.normal(0.0, 0.03, len(dates)),
                }
            )
        )
        forecasts.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "date": dates,
                    "forecast_var": 4e-4,
                    "realized_var": rng.uniform(1e-4, 8e-4, len(dates)),
                }
            )
        )
    metrics = pd.DataFrame(
        {"model": ["har", "ewma"], "symbol": "ALL", "horizon": 1, "n": 90, "qlike": [0.3, 0.4]}
    )
    changes = pd.DataFrame(
        {"symbol": ["BTC"], "parameter": ["scan_im.long"], "previous": [0.05], "current": [0.055]}
    )
    return ReportInputs(
        as_of="2024-03-30",
        champion="har",
        forecasts=pd.concat(forecasts, ignore_index=True),
        margin_path=pd.concat(paths, ignore_index=True),
        metrics=metrics,
        changes=changes,
        notes=("BTC: decrease_cap bit <on> scan_im.long",),
    )


def test_breaches_match_the_backtest_rule() -> None:
    from margin.backtest import breaches_of

    path = _inputs().margin_path
    moves = pd.Series(path["move"].to_numpy())
    expected = breaches_of(moves, pd.Series(path["im_long"].to_numpy()), "long").to_numpy() | (
        breaches_of(moves, pd.Series(path["im_short"].to_numpy()), "short").to_numpy()
    )
    assert np.array_equal(im_breaches(path), expected)
    assert expected.any()


def test_report_is_self_contained_with_every_section(tmp_path: Path) -> None:
    inputs = _inputs()
    charts = write_report(inputs, tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert set(charts) == {"forecast_vs_realized.png", "margin_vs_moves.png", "procyclicality.png"}
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == 3
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)
    for title in ("Model comparison", "Backtest", "Parameter changes", "What happened"):
        assert title in html
    assert "&lt;on&gt;" in html and "<on>" not in html  # notes are escaped
    assert "10" in html  # change_pct of 0.05 → 0.055 is +10 %
    assert not re.search(r"(src|href)=['\"]https?:", html)


def test_same_inputs_same_bytes() -> None:
    charts = build_charts(_inputs())
    assert build_charts(_inputs()) == charts
    assert render_report(_inputs(), charts) == render_report(_inputs(), charts)


def test_missing_frames_are_skipped_not_fatal() -> None:
    html = render_report(ReportInputs(as_of="2024-03-30", champion="ewma"))
    assert html.count("no data") == 3
    assert "data:image/png" not in html


@pytest.mark.parametrize("column", ["im_long", "move"])
def test_a_frame_without_its_columns_gives_no_chart(column: str) -> None:
    inputs = _inputs()
    broken = ReportInputs(
        as_of=inputs.as_of, champion="har", margin_path=inputs.margin_path.drop(columns=column)
    )
    assert margin_chart(broken.margin_path) is None
    assert procyclicality_chart(broken.margin_path) is None
