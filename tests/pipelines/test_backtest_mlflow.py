"""MLflow runs of ``xmargin backtest``: one parent run, one nested run per model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One temporary MLflow store for the module (creating a SQLite store takes seconds)."""
    folder = tmp_path_factory.mktemp("mlruns")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


def _runs(uri: str, name: str | None = None) -> list:  # type: ignore[type-arg]
    """Runs of the backtest experiment; with ``name``, that parent run and its children."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("xmargin-backtest")
    assert experiment is not None
    runs = list(client.search_runs([experiment.experiment_id]))
    if name is None:
        return runs
    parents = {r.info.run_id for r in runs if r.info.run_name == name}
    return [
        r
        for r in runs
        if r.info.run_id in parents or r.data.tags.get("mlflow.parentRunId") in parents
    ]


def test_log_backtest_run_parent_children_artifacts(store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from models.tracking import log_backtest_run

    summary = tmp_path / "backtest_summary.csv"
    summary.write_text("model,n\nstatic,3\n")
    chart = tmp_path / "chart.png"
    chart.write_bytes(b"\x89PNG")
    info = log_backtest_run(
        run_name="backtest 2024-01-01..2024-12-31",
        params={"eval_start": "2024-01-01", "horizon_days": 1},
        metrics={"champion_breach_rate_ALL_IM": 0.01, "skipped": float("nan")},
        model_metrics={"ewma": {"breach_rate_BTC_IM_long": 0.02}, "static": {"n_ALL_IM": 9.0}},
        artifacts={"backtest_summary.csv": summary, "charts/chart.png": chart},
        tags={"champion": "ewma"},
        model_tags={"ewma": {"is_champion": "true"}},
    )
    runs = {r.info.run_id: r for r in _runs(store, "backtest 2024-01-01..2024-12-31")}
    assert set(runs) == {info.parent_run_id, *info.model_run_ids.values()}
    parent = runs[info.parent_run_id]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics == {"champion_breach_rate_ALL_IM": 0.01}
    assert parent.data.params == {"eval_start": "2024-01-01", "horizon_days": "1"}
    assert parent.data.tags["champion"] == "ewma"
    ewma = runs[info.model_run_ids["ewma"]]
    assert ewma.info.run_name == "ewma"
    assert ewma.data.tags["mlflow.parentRunId"] == info.parent_run_id
    assert ewma.data.tags["is_champion"] == "true"
    assert ewma.data.params["model"] == "ewma"
    assert ewma.data.metrics == {"breach_rate_BTC_IM_long": 0.02}
    client = MlflowClient(store)
    assert {a.path for a in client.list_artifacts(info.parent_run_id)} == {
        "backtest_summary.csv",
        "charts",
    }
    local = client.download_artifacts(info.parent_run_id, "charts/chart.png", str(tmp_path))
    assert Path(local).read_bytes() == b"\x89PNG"


def test_failed_logging_marks_runs_failed(store: str, tmp_path: Path) -> None:
    from models.tracking import log_backtest_run

    with pytest.raises(FileNotFoundError):
        log_backtest_run(
            run_name="broken",
            params={},
            metrics={},
            model_metrics={"ewma": {"n_ALL_IM": 1.0}},
            artifacts={"missing.csv": tmp_path / "missing.csv"},
        )
    runs = _runs(store, "broken")
    assert len(runs) == 2
    assert {r.info.status for r in runs} == {"FAILED"}


@pytest.mark.slow
def test_backtest_command_logs_runs(shared_data_dir: Path, store: str, tmp_path: Path) -> None:
    out = tmp_path / "bt"
    args = [
        "backtest", "--data-dir", str(shared_data_dir), "--start", "2024-10-01",
        "--end", "2024-12-31", "--out", str(out), "--symbols", "BTC", "--models", "ewma",
        "--validation-days", "120", "--no-portfolios",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    runs = _runs(store, "backtest 2024-10-01..2024-12-31")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name == "backtest 2024-10-01..2024-12-31"
    assert parent.data.tags["champion"] == "ewma"
    assert "lowest average IM" in parent.data.tags["champion_rule"]
    params = parent.data.params
    assert params["eval_start"] == "2024-10-01" and params["validation_days"] == "120"
    assert params["im_confidence"] == "0.99" and len(params["data_digest"]) == 16
    children = {r.info.run_name: r for r in runs if r is not parent}
    assert set(children) == {"ewma", "static", "champion"}
    assert children["champion"].data.tags["champion_of"] == "ewma"
    import pandas as pd

    summary = pd.read_csv(out / "backtest_summary.csv")
    row = summary[(summary["model"] == "champion") & (summary["level"] == "IM")]
    row = row[row["side"] == "long"].iloc[0]
    metrics = children["champion"].data.metrics
    assert metrics["breaches_BTC_IM_long"] == row["breaches"]
    assert metrics["avg_margin_BTC_IM_long"] == pytest.approx(row["avg_margin"], rel=1e-9)
    assert "val_avg_margin_ALL_IM" in metrics
    assert children["static"].data.metrics["avg_margin_vs_static_ALL_IM"] == pytest.approx(1.0)
    assert parent.data.metrics["apc_all_avg_im"] > 0
    im = summary[summary["level"] == "IM"].set_index(["model", "side"])["avg_margin"]
    worst = max(im[("champion", side)] / im[("static", side)] for side in ("long", "short"))
    assert parent.data.metrics["champion_avg_margin_vs_static_worst_IM"] == pytest.approx(worst)
    from mlflow import MlflowClient

    artifacts = {a.path for a in MlflowClient(store).list_artifacts(parent.info.run_id)}
    assert {"backtest_summary.csv", "apc_comparison.csv", "charts"} <= artifacts

    # --no-mlflow: the same backtest from the saved forecasts logs nothing.
    before = len(_runs(store))
    again = CliRunner().invoke(
        app, [*args[:7], "--out", str(tmp_path / "again"), *args[9:], "--no-mlflow",
              "--forecasts", str(out / "forecasts.parquet")],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "backtest_summary.csv").is_file()
    assert len(_runs(store)) == before
