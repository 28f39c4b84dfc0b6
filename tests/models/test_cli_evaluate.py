"""``xmargin evaluate`` on a slice of the real market data (no MLflow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from models.errors import UnknownModelError
from models.evaluation import METRIC_COLUMNS
from pipelines.cli import app

pytestmark = pytest.mark.slow


def test_evaluate_writes_metrics_and_names_the_champion_last(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    args = [
        "evaluate",
        "--data-dir",
        str(shared_data_dir),
        "--start",
        "2024-07-01",
        "--end",
        "2024-08-31",
        "--out",
        str(tmp_path),
        "--symbols",
        "BTC,ETH",
        "--models",
        "ewma,garch,har",
        "--validation-days",
        "60",
        "--no-mlflow",
        "--jobs",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(tmp_path / "forecast_metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert set(metrics["symbol"]) == {"BTC", "ETH", "ALL"}
    assert set(metrics["model"]) == {"ewma", "garch", "har"}
    assert (metrics["n"] > 50).all() and (metrics["qlike"] > 0).all()
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("champion: ") and "before --start" in last
    assert last.split()[1] in {"ewma", "garch", "har"}


def test_unknown_model_is_a_user_error(shared_data_dir: Path, tmp_path: Path) -> None:
    args = [
        "evaluate",
        "--data-dir",
        str(shared_data_dir),
        "--start",
        "2024-07-01",
        "--end",
        "2024-08-31",
        "--out",
        str(tmp_path),
        "--models",
        "nope",
    ]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, UnknownModelError | ValueError)
    assert "unknown model(s) nope" in str(result.exception)
