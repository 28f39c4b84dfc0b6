"""MLflow tracking against a temporary SQLite store: runs, metrics, artifacts, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from vol_sim import simulate_panel

from models.combo import ComboForecaster
from models.evaluation import evaluate
from models.registry import make_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_eval() -> tuple[pd.DataFrame, object]:
    panel = simulate_panel(("BTC", "ETH"), n_days=500, start="2021-01-01")
    result = evaluate(
        panel,
        "2022-03-01",
        "2022-05-10",
        models={
            "ewma": make_model("ewma"),
            "garch": make_model("garch"),
            "har": make_model("har"),
            "lgbm": make_model("lgbm", n_estimators=20),
            "combo": ComboForecaster(members=("ewma", "har")),
        },
        validation_days=60,
        refit_every=35,
        mcs_reps=100,
    )
    return panel, result


def test_log_evaluation_creates_runs_metrics_artifacts_and_aliases(
    small_eval: tuple[pd.DataFrame, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from models.tracking import log_evaluation

    panel, result = small_eval
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    info = log_evaluation(result, panel, experiment="test-vol")  # type: ignore[arg-type]
    client = MlflowClient(uri, uri)

    parent = client.get_run(info.parent_run_id)
    assert parent.data.tags["champion_h1"] == result.selections[1].champion  # type: ignore[attr-defined]
    assert "validation window" in parent.data.tags["selection_rule"]
    assert parent.data.tags["symbols"] == "BTC,ETH"
    assert len(parent.inputs.dataset_inputs) == 1

    children = client.search_runs(
        [info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{info.parent_run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == ["combo", "ewma", "garch", "har", "lgbm"]
    har = client.get_run(info.model_run_ids["har"])
    for key in ("qlike_BTC_h1", "qlike_ALL_h1", "qlike_ALL_h7", "mse_ETH_h7", "in_mcs_ALL_h1"):
        assert np.isfinite(har.data.metrics[key])
    assert har.data.metrics["dm_vs_garch_p_ALL_h1"] <= 1.0
    assert har.data.params["refit_every"] == "35"

    artifacts = {a.path for a in client.list_artifacts(info.model_run_ids["har"])}
    assert {"forecasts.parquet", "charts"} <= artifacts
    charts = {a.path for a in client.list_artifacts(info.model_run_ids["har"], "charts")}
    assert charts == {"charts/BTC.png", "charts/ETH.png"}
    assert str(tmp_path) in parent.info.artifact_uri  # artifacts live next to the store

    for h in (1, 7):
        name = f"xmargin-vol-h{h}"
        champion = client.get_model_version_by_alias(name, "champion")
        challenger = client.get_model_version_by_alias(name, "challenger")
        assert champion.tags["model"] == result.selections[h].champion  # type: ignore[attr-defined]
        assert challenger.tags["model"] == result.selections[h].challenger  # type: ignore[attr-defined]
        assert champion.tags["reason"]

    import lightgbm
    import mlflow.lightgbm

    lgbm_run = info.model_run_ids["lgbm"]
    for h in (1, 7):
        booster = mlflow.lightgbm.load_model(f"runs:/{lgbm_run}/lightgbm_h{h}")
        fitted = result.walk.fitted["lgbm"].regressors_[("*", h)].estimator_  # type: ignore[attr-defined]
        assert isinstance(booster, lightgbm.Booster)
        assert booster.model_to_string() == fitted.booster_.model_to_string()

    model = mlflow.pyfunc.load_model("models:/xmargin-vol-h1@champion")
    out = model.predict(panel.reset_index())
    assert list(out.columns) == ["symbol", "date", "horizon", "variance", "volatility"]
    assert len(out) == len(panel)
    assert (out["variance"] > 0).all() and np.isfinite(out["variance"]).all()


def test_charts_are_one_deterministic_png_per_model_and_symbol(
    small_eval: tuple[pd.DataFrame, object],
) -> None:
    from models.tracking import _all_charts

    _, result = small_eval
    serial = _all_charts(result)  # type: ignore[arg-type]
    assert set(serial) == {"ewma", "garch", "har", "lgbm", "combo"}
    for pngs in serial.values():
        assert set(pngs) == {"BTC", "ETH"}
        assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs.values())
    assert _all_charts(result) == serial  # type: ignore[arg-type]
    # Drawn in worker processes (one reused figure per model): the same bytes.
    assert _all_charts(result, n_jobs=2) == serial  # type: ignore[arg-type]


def test_a_reused_figure_draws_the_same_chart_as_a_fresh_one(
    small_eval: tuple[pd.DataFrame, object],
) -> None:
    from models.tracking import _chart_inputs, chart_pngs

    _, result = small_eval
    forecasts, realized = _chart_inputs(result, "har")  # type: ignore[arg-type]
    together = chart_pngs("har", forecasts, realized)
    for symbol in ("BTC", "ETH"):
        alone = chart_pngs(
            "har",
            {h: s[s.index.get_level_values("symbol") == symbol] for h, s in forecasts.items()},
            {h: s[s.index.get_level_values("symbol") == symbol] for h, s in realized.items()},
        )
        assert alone == {symbol: together[symbol]}
