"""Tasks that record the run in MLflow (through ``models.tracking``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import XmarginConfig
from pipelines.tasks.common import IO_BACKOFF, IO_RETRIES, package_digest

if TYPE_CHECKING:
    from margin.parameters import ParameterSet
    from pipelines.tasks.forecasting import ModelComparison


@dataclass(frozen=True)
class Tracked:
    """What MLflow recorded about the champion (``None`` fields when nothing was logged)."""

    run_id: str | None = None
    registry_version: str | None = None
    parent_run_id: str | None = None


def _tracking_key(_: Any, parameters: dict[str, Any]) -> str:
    comparison: ModelComparison = parameters["comparison"]
    cfg: XmarginConfig = parameters["cfg"]
    walk = comparison.evaluation.walk
    parts = (
        cfg.mlflow_tracking_uri,
        parameters["data_digest"],
        parameters["panel_digest"],
        repr(walk.config),
        ",".join(walk.models),
        comparison.selection.reason,
        package_digest("models"),
    )
    return "track-models-" + hashlib.sha256("|".join(parts).encode()).hexdigest()


@task(
    name="track-models",
    cache_key_fn=_tracking_key,
    persist_result=True,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def track_models(
    comparison: ModelComparison,
    panel: pd.DataFrame,
    cfg: XmarginConfig,
    data_digest: str,
    panel_digest: str,
) -> Tracked:
    """Log the comparison (one parent run, one nested run per model) and register the
    champion and challenger with their aliases (``models.tracking.log_evaluation``).

    Cached on the inputs' digests and the store: rerunning the same day reuses the logged
    runs, so the parameter files (which name the run) come out byte-identical.
    """
    import os

    from models.tracking import REGISTERED_NAME, log_evaluation

    uri = cfg.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    info = log_evaluation(comparison.evaluation, panel)
    name = REGISTERED_NAME.format(horizon=comparison.selection.horizon)
    version = info.registered.get(name, {}).get("champion")
    run_id = info.model_run_ids.get(comparison.champion)
    get_run_logger().info(
        "MLflow: parent run %s, %d model runs; %s@champion = version %s (%s)",
        info.parent_run_id, len(info.model_run_ids), name, version, comparison.champion,
    )  # fmt: skip
    return Tracked(run_id=run_id, registry_version=version, parent_run_id=info.parent_run_id)


@task(
    name="log-parameter-run",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def log_parameter_run(
    tracked: Tracked,
    params: ParameterSet,
    backtest_summary: pd.DataFrame,
    charts: dict[str, bytes],
    report_html: str,
    cfg: XmarginConfig,
) -> str:
    """Record the published parameter set as a run of the ``xmargin-parameters`` experiment:
    backtest metrics of the champion, scan ranges per symbol, the report and its charts
    (``models.tracking.log_parameter_run``)."""
    import os

    from margin.backtest import backtest_metrics
    from models.tracking import log_parameter_run as log_run

    os.environ["MLFLOW_TRACKING_URI"] = cfg.mlflow_tracking_uri
    metrics = backtest_metrics(backtest_summary)
    for symbol, p in params.underlyings.items():
        metrics[f"sigma_{symbol}"] = p.sigma
        metrics[f"scan_im_long_{symbol}"] = p.scan_im.long
        metrics[f"scan_im_short_{symbol}"] = p.scan_im.short
        metrics[f"scan_mm_long_{symbol}"] = p.scan_mm.long
        metrics[f"scan_mm_short_{symbol}"] = p.scan_mm.short
    run_params = {
        "as_of": str(params.as_of),
        "horizon_days": str(params.horizon_days),
        "im_confidence": str(params.im_confidence),
        "mm_confidence": str(params.mm_confidence),
        "symbols": ",".join(sorted(params.underlyings)),
    }
    tags = {} if tracked.parent_run_id is None else {"forecast_run_id": tracked.parent_run_id}
    artifacts = {**charts, "report.html": report_html.encode("utf-8")}
    run_id = log_run(
        as_of=str(params.as_of), params=run_params, metrics=metrics, artifacts=artifacts, tags=tags
    )
    get_run_logger().info(
        "MLflow: parameters run %s (%d metrics, report and %d charts)",
        run_id, len(metrics), len(charts),
    )  # fmt: skip
    return run_id
