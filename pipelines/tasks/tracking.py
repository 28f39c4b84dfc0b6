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
    name="log-report-artifacts",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def log_report_artifacts(
    tracked: Tracked, charts: dict[str, bytes], report_html: str, cfg: XmarginConfig
) -> None:
    """Attach the report and its charts to the evaluation's parent MLflow run (``report/``).

    ``models.tracking`` has no call for extra artifacts yet, so this is the one place outside
    it that talks to MLflow (a single ``log_artifacts``).
    """
    if tracked.parent_run_id is None:
        return
    import tempfile

    from mlflow import MlflowClient

    client = MlflowClient(cfg.mlflow_tracking_uri, cfg.mlflow_tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, png in charts.items():
            (folder / name).write_bytes(png)
        (folder / "report.html").write_text(report_html, encoding="utf-8")
        client.log_artifacts(tracked.parent_run_id, str(folder), "report")
    get_run_logger().info(
        "Report and %d charts logged to MLflow run %s", len(charts), tracked.parent_run_id
    )
