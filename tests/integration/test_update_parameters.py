"""``update-parameters`` end to end on a short slice of the real data, under a Prefect test
server, with a temporary MLflow store: every output exists and verifies, a rerun gives the
same bytes, and a Dask ``LocalCluster`` gives the same files as the thread pool."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

AS_OF = "2024-06-30"
SYMBOLS = ("BTC", "ETH")
PARAM_FILES = ("params.json", "params.csv", "manifest.json")
RUN_FILES = (*PARAM_FILES, "backtest_summary.csv", "report.html")


def test_every_output_exists_and_verifies(first_run: tuple[Path, dict[str, object]]) -> None:
    from margin.backtest import SUMMARY_COLUMNS
    from margin.params import verify

    out, result = first_run
    folder = out / AS_OF
    for name in RUN_FILES:
        assert (folder / name).is_file(), name
    params = verify(folder)
    assert params.as_of.isoformat() == AS_OF
    assert sorted(params.underlyings) == sorted(SYMBOLS)
    assert params.provenance.model == result["champion"]
    assert {p.model for p in params.underlyings.values()} == {result["champion"]}

    summary = pd.read_csv(folder / "backtest_summary.csv")
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    assert set(summary["symbol"]) == set(SYMBOLS)
    assert {"champion", "static"} <= set(summary["model"])

    csv_rows = pd.read_csv(folder / "params.csv")
    assert len(csv_rows) == len(SYMBOLS)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"params.json", "params.csv"}

    html = (folder / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 3
    assert "Model comparison" in html and result["champion"] in html
    assert "src='http" not in html  # self-contained


def test_champion_is_registered_in_mlflow(
    first_run: tuple[Path, dict[str, object]], mlflow_store: str
) -> None:
    from mlflow import MlflowClient

    out, result = first_run
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    version = client.get_model_version_by_alias("xmargin-vol-h1", "champion")
    params = json.loads((out / AS_OF / "params.json").read_text())
    assert params["provenance"]["registry_version"] == str(version.version)
    assert params["provenance"]["mlflow_run_id"]
    run = client.get_run(params["provenance"]["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["model"] == result["champion"]
    parent = run.data.tags["mlflow.parentRunId"]
    # The published set is a run of the parameters experiment, linked to the evaluation.
    experiment = client.get_experiment_by_name("xmargin-parameters")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], f"tags.as_of = '{AS_OF}'")
    assert runs, "no parameters run for the as-of date"
    param_run = runs[0]
    assert param_run.data.tags["forecast_run_id"] == parent
    assert param_run.data.params["as_of"] == AS_OF
    assert "bt_breach_rate_BTC_IM_long" in param_run.data.metrics
    published_long = params["underlyings"]["BTC"]["scan_im"]["long"]
    assert param_run.data.metrics["scan_im_long_BTC"] == pytest.approx(published_long, rel=1e-9)
    report = {a.path for a in client.list_artifacts(param_run.info.run_id, "report")}
    assert {"report/report.html", "report/margin_vs_moves.png"} <= report


def test_rerun_gives_byte_identical_parameter_files(
    first_run: tuple[Path, dict[str, object]],
    data_dir: Path,
    mlflow_store: str,
    signing_key: Path,
    make_config: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from pipelines.flows import update_parameters

    out, _ = first_run
    before = {name: (out / AS_OF / name).read_bytes() for name in PARAM_FILES}
    old_target = (out / AS_OF).resolve()
    tmp = tmp_path_factory.mktemp("rerun")
    config = make_config(tmp, data_dir, out, mlflow_store, signing_key)
    update_parameters(config_file=str(config), as_of=AS_OF)
    assert (out / AS_OF).resolve() != old_target  # a new run folder was switched in
    after = {name: (out / AS_OF / name).read_bytes() for name in PARAM_FILES}
    assert after == before


def test_dask_local_cluster_gives_the_same_files(
    first_run: tuple[Path, dict[str, object]],
    data_dir: Path,
    mlflow_store: str,
    signing_key: Path,
    make_config: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from distributed import LocalCluster

    from pipelines.config import load_config
    from pipelines.flows import run_update_parameters

    out, _ = first_run
    tmp = tmp_path_factory.mktemp("dask")
    dask_out = tmp / "out"
    cfg_path = make_config(tmp, data_dir, dask_out, mlflow_store, signing_key, cache=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:  # fmt: skip
        cfg = load_config(cfg_path).with_overrides(dask={"address": cluster.scheduler_address})
        outcome = run_update_parameters(cfg, pd.Timestamp(AS_OF).date())
    assert outcome.as_of == AS_OF
    for name in PARAM_FILES:
        assert (dask_out / AS_OF / name).read_bytes() == (out / AS_OF / name).read_bytes(), name
