"""Tasks of the forecasting steps: walk-forward per model (cached), comparison, champion."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import XmarginConfig
from pipelines.tasks.common import package_digest

if TYPE_CHECKING:
    from models.evaluation import EvaluationResult
    from models.selection import Selection
    from models.walkforward import WalkForwardResult


@dataclass(frozen=True)
class WalkForwardJob:
    """One walk-forward run: a model over ``[start, end]`` (UTC dates), refit schedule, horizon."""

    model: str
    start: dt.date
    end: dt.date
    refit_every: int
    horizon: int
    window: int | None
    panel_digest: str

    def cache_key(self) -> str:
        """Key of the cached result: inputs' digest, schedule and the models' source code."""
        return (
            "walk-forward-"
            + hashlib.sha256(f"{self!r}|{package_digest('models')}".encode()).hexdigest()
        )


def _walk_forward_key(_: Any, parameters: dict[str, Any]) -> str:
    job: WalkForwardJob = parameters["job"]
    return job.cache_key()


@task(
    name="walk-forward",
    task_run_name="walk-forward-{job.model}",
    cache_key_fn=_walk_forward_key,
    persist_result=True,
)
def walk_forward_model(job: WalkForwardJob, panel: pd.DataFrame) -> WalkForwardResult:
    """Out-of-sample forecasts of one model (``models.walkforward.walk_forward``).

    Cached on the panel digest, the schedule and the source of ``models``: a rerun on the
    same data skips the fits.
    """
    from models.registry import make_model
    from models.walkforward import WalkForwardConfig, walk_forward

    config = WalkForwardConfig(
        start=pd.Timestamp(job.start, tz="UTC"),
        end=pd.Timestamp(job.end, tz="UTC"),
        refit_every=job.refit_every,
        horizons=(job.horizon,),
        window=job.window,
    )
    result = walk_forward(panel, {job.model: make_model(job.model)}, config)
    log = get_run_logger()
    fallbacks = result.fallbacks.get(job.model, [])
    log.info(
        "%s: forecasts %s → %s, refit every %d days, %.1f s, %d fallback(s)",
        job.model, job.start, job.end, job.refit_every, result.seconds.get(job.model, 0.0),
        len(fallbacks),
    )  # fmt: skip
    for item in fallbacks[:5]:
        log.warning(
            "%s fallback: %s %s: %s (%s)",
            job.model,
            item.symbol,
            item.date.date(),
            item.reason,
            item.action,
        )
    return result


@dataclass(frozen=True)
class ModelComparison:
    """Scores of every model on the evaluation window and the champion chosen before it.

    ``metrics`` has the columns of ``forecast_metrics.csv`` (``model, symbol, horizon, n,
    qlike, mse, dm_vs_garch_p, dm_vs_har_p, in_mcs``); ``forecasts`` maps (model, horizon)
    to out-of-sample h-day variance (decimal) by (symbol, date); ``realized`` is the realized
    h-day variance on the same index.
    """

    metrics: pd.DataFrame
    details: pd.DataFrame
    selection: Selection
    forecasts: dict[tuple[str, int], pd.Series]
    realized: pd.Series
    fallbacks: dict[str, int]
    eval_start: dt.date
    eval_end: dt.date
    evaluation: EvaluationResult
    """The same, as ``models.evaluation.evaluate`` returns it (what MLflow tracking logs)."""

    @property
    def champion(self) -> str:
        """Name of the selected model."""
        return self.selection.champion


@task(name="compare-models", cache_policy=NO_CACHE)
def compare_models(
    results: Sequence[WalkForwardResult],
    panel: pd.DataFrame,
    horizon: int,
    eval_start: dt.date,
    eval_end: dt.date,
    validation_start: dt.date,
    seed: int,
) -> ModelComparison:
    """Score every model (``models.evaluation.score``) and pick the champion on the
    validation window before the evaluation window (``models.selection.select_champion``)."""
    from models.evaluation import METRIC_COLUMNS, EvaluationResult, realized_variance, score
    from models.selection import select_champion
    from models.walkforward import WalkForwardConfig, WalkForwardResult

    start, end = pd.Timestamp(eval_start, tz="UTC"), pd.Timestamp(eval_end, tz="UTC")
    first = pd.Timestamp(validation_start, tz="UTC")
    walk = WalkForwardResult(
        config=WalkForwardConfig(first, end, results[0].config.refit_every, (horizon,),
                                 results[0].config.window),
        forecasts={k: v for r in results for k, v in r.forecasts.items()},
        fallbacks={k: v for r in results for k, v in r.fallbacks.items()},
        seconds={k: v for r in results for k, v in r.seconds.items()},
        fitted={k: v for r in results for k, v in r.fitted.items()},
    )  # fmt: skip
    fallbacks = {m: len(v) for m, v in walk.fallbacks.items()}
    realized = realized_variance(panel, horizon)
    details = score(walk.forecasts, {horizon: realized}, start, end, seed=seed)
    selection = select_champion(
        walk.forecasts, realized, horizon, first, start - pd.Timedelta(days=1)
    )
    log = get_run_logger()
    log.info("Champion: %s", selection.reason)
    pooled = details[details["symbol"] == "ALL"].set_index("model")
    for model, row in pooled.iterrows():
        log.info(
            "%-10s pooled QLIKE %.4f  MSE %.3g  in MCS: %s  fallbacks: %d",
            model,
            row["qlike"],
            row["mse"],
            bool(row["in_mcs"]),
            fallbacks.get(str(model), 0),
        )
    metrics = details[METRIC_COLUMNS].copy()
    evaluation = EvaluationResult(
        metrics, details, {horizon: selection}, walk, {horizon: realized}, start, end, first
    )
    return ModelComparison(
        metrics=metrics,
        details=details,
        selection=selection,
        forecasts=walk.forecasts,
        realized=realized,
        fallbacks=fallbacks,
        eval_start=eval_start,
        eval_end=eval_end,
        evaluation=evaluation,
    )


@task(name="champion-forecasts", cache_policy=NO_CACHE)
def champion_job(
    champion: str, day: dt.date, cfg: XmarginConfig, panel_digest: str
) -> WalkForwardJob:
    """The champion's longer walk-forward: residual history + backtest validation + window.

    Calibration needs ``min_residuals`` standardized residuals before the as-of date and the
    backtest the same before each of its dates, so the span is
    ``min_residuals + backtest validation_days + backtest days`` (plus a week of slack).
    """
    span = cfg.calibration.min_residuals + cfg.backtest.validation_days + cfg.backtest.days + 7
    return WalkForwardJob(
        model=champion,
        start=day - dt.timedelta(days=span),
        end=day,
        refit_every=cfg.backtest.refit_every,
        horizon=cfg.calibration.horizon_days,
        window=None if cfg.models.window == "expanding" else cfg.models.rolling_days,
        panel_digest=panel_digest,
    )
