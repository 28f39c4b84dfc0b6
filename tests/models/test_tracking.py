"""MLflow tracking against a temporary SQLite store: runs, metrics, artifacts, registry."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from vol_sim import simulate_panel

from models.combo import ComboForecaster
from models.evaluation import evaluate
from models.registry import make_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_eval() -> tuple[pd.DataFrame, Any]:
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


@dataclass(frozen=True)
class Logged:
    panel: pd.DataFrame
    result: Any
    info: Any
    uri: str
    root: Path
    noise: list[str]  # MLflow log records (WARNING+) and Python warnings while logging


class _Recorder(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def logged(
    small_eval: tuple[pd.DataFrame, Any], tmp_path_factory: pytest.TempPathFactory
) -> Logged:
    """One evaluation logged into a temporary SQLite store (MLflow chatter recorded)."""
    from models.tracking import log_evaluation

    panel, result = small_eval
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    handler = _Recorder(logging.INFO)
    records = handler.records
    mlflow_logger = logging.getLogger("mlflow")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow_logger.addHandler(handler)
        try:
            info = log_evaluation(result, panel, experiment="test-vol")
        finally:
            mlflow_logger.removeHandler(handler)
    noise = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    noise += [str(w.message) for w in caught]
    noise += [r.getMessage() for r in records if "uv" in r.name]
    return Logged(panel, result, info, uri, root, noise)


def test_log_evaluation_creates_runs_metrics_artifacts_and_aliases(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    panel, result, info, uri = logged.panel, logged.result, logged.info, logged.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)

    parent = client.get_run(info.parent_run_id)
    assert parent.data.tags["champion_h1"] == result.selections[1].champion
    assert "validation window" in parent.data.tags["selection_rule"]
    assert parent.data.tags["symbols"] == "BTC,ETH"
    assert parent.inputs is not None and len(parent.inputs.dataset_inputs) == 1

    children = client.search_runs(
        [info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{info.parent_run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == ["combo", "ewma", "garch", "har", "lgbm"]
    har = client.get_run(info.model_run_ids["har"])
    for key in ("qlike_BTC_h1", "qlike_ALL_h1", "qlike_ALL_h7", "mse_ETH_h7", "in_mcs_ALL_h1"):
        assert np.isfinite(har.data.metrics[key])
    assert har.data.metrics["dm_vs_garch_p_ALL_h1"] <= 1.0
    assert har.data.params["refit_every"] == "35"
    assert "horizon" not in har.data.params  # no model config leaking into run params

    artifacts = {a.path for a in client.list_artifacts(info.model_run_ids["har"])}
    assert {"forecasts.parquet", "charts"} <= artifacts
    charts = {a.path for a in client.list_artifacts(info.model_run_ids["har"], "charts")}
    assert charts == {"charts/BTC.png", "charts/ETH.png"}
    assert str(logged.root) in parent.info.artifact_uri  # artifacts live next to the store

    for h in (1, 7):
        name = f"xmargin-vol-h{h}"
        champion = client.get_model_version_by_alias(name, "champion")
        challenger = client.get_model_version_by_alias(name, "challenger")
        assert champion.tags["model"] == result.selections[h].champion
        assert challenger.tags["model"] == result.selections[h].challenger
        assert champion.tags["reason"]

    import lightgbm
    import mlflow.lightgbm

    lgbm_run = info.model_run_ids["lgbm"]
    for h in (1, 7):
        booster = mlflow.lightgbm.load_model(f"runs:/{lgbm_run}/lightgbm_h{h}")
        fitted = result.walk.fitted["lgbm"].regressors_[("*", h)].estimator_
        assert isinstance(booster, lightgbm.Booster)
        assert booster.model_to_string() == fitted.booster_.model_to_string()

    model = mlflow.pyfunc.load_model("models:/xmargin-vol-h1@champion")
    out = model.predict(_model_input(panel))
    assert list(out.columns) == ["symbol", "date", "horizon", "variance", "volatility"]
    assert len(out) == len(panel)
    assert (out["variance"] > 0).all() and np.isfinite(out["variance"]).all()


def _model_input(panel: pd.DataFrame) -> pd.DataFrame:
    """The panel as plain columns with timezone-naive UTC dates (MLflow's datetime)."""
    return panel.reset_index().assign(date=lambda f: f["date"].dt.tz_localize(None))


def _reference(result: Any, panel: pd.DataFrame, horizon: int) -> np.ndarray:
    """The champion's own forecast, computed in this process without MLflow."""
    fitted = result.walk.fitted[result.selections[horizon].champion]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(fitted.forecast(panel, horizon).variance.to_numpy())


def test_logging_is_quiet_and_uses_models_from_code_not_cloudpickle(logged: Logged) -> None:
    for phrase in ("CloudPickle", "infer model signature", "pip version", "uv.lock", "uv project"):
        assert not [n for n in logged.noise if phrase in n], phrase
    assert not [n for n in logged.noise if "integer column" in n]
    assert not [n for n in logged.noise if "input example" in n]

    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    client = MlflowClient(logged.uri, logged.uri)
    version = client.get_model_version_by_alias("xmargin-vol-h7", "champion")
    local = Path(download_artifacts(version.source, tracking_uri=logged.uri))
    meta = Model.load(str(local))
    pyfunc = meta.flavors["python_function"]
    assert pyfunc["model_code_path"].endswith("pyfunc_model.py")
    assert "python_model.pkl" not in {p.name for p in local.rglob("*")}
    assert (local / "code" / "models" / "pyfunc_model.py").is_file()
    assert not (local / "uv.lock").exists()
    assert json.loads((local / "artifacts" / "settings_h7.json").read_text())["horizon"] == 7
    reqs = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("mlflow==") for r in reqs) and any(r.startswith("arch==") for r in reqs)

    signature = meta.signature
    names = signature.inputs.input_names()
    assert names[:4] == ["symbol", "date", "ret", "rv"]
    types = {c.name: c.type.name for c in signature.inputs.inputs}
    assert types["symbol"] == "string" and types["date"] == "datetime"
    assert signature.outputs.input_names() == [
        "symbol",
        "date",
        "horizon",
        "variance",
        "volatility",
    ]
    assert signature.params.params[0].name == "horizon"
    assert signature.params.params[0].default == 7


def test_input_columns_cover_what_each_forecaster_reads(logged: Logged) -> None:
    from models.pyfunc_logging import input_columns

    fitted = logged.result.walk.fitted
    assert input_columns(fitted["ewma"]) == (("ret", "rv"), ())
    assert input_columns(fitted["har"]) == (("ret", "rv", "har_d", "har_w", "har_m"), ())
    required, optional = input_columns(fitted["lgbm"])
    assert required == ("ret", "rv", "har_w", "har_m")
    assert {"dvol", "funding", "rq", "n_hours", "parkinson"} <= set(optional)
    assert not set(required) & set(optional)
    combo_required, _ = input_columns(fitted["combo"])
    assert set(combo_required) == {"ret", "rv", "har_d", "har_w", "har_m"}
    # Every model forecasts from exactly its signature's columns.
    for name, model in fitted.items():
        req, opt = input_columns(model)
        frame = logged.panel[[*req, *[c for c in opt if c in logged.panel]]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fc = model.forecast(frame, 1).variance
            full = model.forecast(logged.panel, 1).variance
        np.testing.assert_array_equal(fc.to_numpy(), full.to_numpy(), err_msg=name)


def test_registered_champion_forecasts_like_the_fitted_model_with_params(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.uri)
    mlflow.set_registry_uri(logged.uri)
    model = mlflow.pyfunc.load_model("models:/xmargin-vol-h7@champion")
    out = model.predict(_model_input(logged.panel))
    assert (out["horizon"] == 7).all()
    np.testing.assert_allclose(out["variance"], _reference(logged.result, logged.panel, 7))
    np.testing.assert_allclose(out["volatility"] ** 2, out["variance"])
    assert out["date"].dt.tz is None  # dates come back as they went in
    h1 = model.predict(_model_input(logged.panel), params={"horizon": 1})
    fitted = logged.result.walk.fitted[logged.result.selections[7].champion]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = fitted.forecast(logged.panel, 1).variance.to_numpy()
    assert (h1["horizon"] == 1).all()
    np.testing.assert_allclose(h1["variance"], expected)
    with pytest.raises(mlflow.exceptions.MlflowException, match="timezone-naive"):
        model.predict(logged.panel.reset_index())


_FRESH_LOAD = """
import importlib.util, json, sys
root = sys.argv[1]
sys.path[:] = [p for p in sys.path if p not in ("", ".", root)]
assert importlib.util.find_spec("models") is None, "project code visible"
import mlflow, pandas as pd
mlflow.set_registry_uri(sys.argv[2])
model = mlflow.pyfunc.load_model("models:/xmargin-vol-h1@champion")
out = model.predict(pd.read_parquet("input.parquet"))
out.to_parquet("output.parquet")
print(json.dumps({"models": sys.modules["models"].__file__}))
"""


def test_champion_loads_in_a_fresh_process_outside_the_repository(
    logged: Logged, tmp_path: Path
) -> None:
    """Only the logged model's own code makes the forecaster loadable: no repo on the path."""
    _model_input(logged.panel).to_parquet(tmp_path / "input.parquet")
    root = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = logged.uri
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_LOAD, root, logged.uri],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded_from = json.loads(done.stdout.strip().splitlines()[-1])["models"]
    assert not loaded_from.startswith(root + "/models")
    assert "/code/models/" in loaded_from
    out = pd.read_parquet(tmp_path / "output.parquet")
    np.testing.assert_allclose(out["variance"], _reference(logged.result, logged.panel, 1))


def test_charts_are_one_deterministic_png_per_model_and_symbol(
    small_eval: tuple[pd.DataFrame, Any],
) -> None:
    from models.tracking import _all_charts

    _, result = small_eval
    serial = _all_charts(result)
    assert set(serial) == {"ewma", "garch", "har", "lgbm", "combo"}
    for pngs in serial.values():
        assert set(pngs) == {"BTC", "ETH"}
        assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs.values())
    assert _all_charts(result) == serial
    # Drawn in worker processes (one reused figure per model): the same bytes.
    assert _all_charts(result, n_jobs=2) == serial


def test_a_reused_figure_draws_the_same_chart_as_a_fresh_one(
    small_eval: tuple[pd.DataFrame, Any],
) -> None:
    from models.tracking import _chart_inputs, chart_pngs

    _, result = small_eval
    forecasts, realized = _chart_inputs(result, "har")
    together = chart_pngs("har", forecasts, realized)
    for symbol in ("BTC", "ETH"):
        alone = chart_pngs(
            "har",
            {h: s[s.index.get_level_values("symbol") == symbol] for h, s in forecasts.items()},
            {h: s[s.index.get_level_values("symbol") == symbol] for h, s in realized.items()},
        )
        assert alone == {symbol: together[symbol]}
