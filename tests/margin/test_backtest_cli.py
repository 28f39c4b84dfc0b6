"""``xmargin backtest`` end to end on the real data (one fast model, short windows)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from margin.backtest import SUMMARY_COLUMNS
from margin.portfolio_backtest import PORTFOLIO_COLUMNS, PORTFOLIOS
from pipelines.cli import app


@pytest.mark.slow
def test_backtest_command_writes_summary_and_charts(shared_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bt"
    docs = tmp_path / "backtests.md"
    docs.write_text(
        "# Backtests\n\nintro\n\n<!-- backtest-results:start -->\nold\n"
        "<!-- backtest-results:end -->\n\ntrailer\n"
    )
    args = [
        "backtest", "--data-dir", str(shared_data_dir), "--start", "2024-07-01",
        "--end", "2024-12-31", "--out", str(out), "--symbols", "BTC,ETH", "--models", "ewma",
        "--validation-days", "180", "--docs", str(docs), "--no-mlflow",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "backtest_summary.csv")
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    assert set(summary["model"]) == {"ewma", "static", "champion"}
    assert set(summary["symbol"]) == {"BTC", "ETH"}
    # 184 days, the last one's move (to 2025-01-01) is not in the data
    assert (summary["n"] == 183).all()
    for name in ("margin_vs_moves.png", "apc_on_vs_off.png", "apc_comparison.csv"):
        assert (out / name).stat().st_size > 0
    text = docs.read_text()
    assert text.startswith("# Backtests\n\nintro") and text.endswith("trailer\n")
    assert "old" not in text and "Champion IM (99%)" in text
    portfolios = pd.read_csv(out / "portfolio_backtest.csv")
    assert tuple(portfolios.columns) == PORTFOLIO_COLUMNS
    assert set(portfolios["portfolio"]) == set(PORTFOLIOS)
    assert (portfolios["n"] == 183).all()
    assert "Portfolio backtest through the engine" in text

    # The saved forecasts reproduce the same summary byte for byte.
    again = tmp_path / "again"
    rerun = CliRunner().invoke(
        app,
        [*args[:7], "--out", str(again), "--symbols", "BTC,ETH", "--validation-days", "180",
         "--forecasts", str(out / "forecasts.parquet"), "--no-portfolios", "--no-mlflow"],
    )  # fmt: skip
    assert rerun.exit_code == 0, rerun.output
    assert (again / "backtest_summary.csv").read_bytes() == (
        out / "backtest_summary.csv"
    ).read_bytes()


def test_bad_dates_are_one_line_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["backtest", "--data-dir", str(tmp_path), "--start", "2024-13-01"]
    )
    assert result.exit_code != 0
    assert "not a date" in str(result.exception)


def test_portfolios_need_btc_and_eth(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["backtest", "--data-dir", str(tmp_path), "--symbols", "SOL"])
    assert result.exit_code != 0
    assert "--no-portfolios" in str(result.exception)
