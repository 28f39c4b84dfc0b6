"""Thin MLflow layer: one parent run per evaluation, one nested run per model.

With :mod:`models.pyfunc_logging` (how a fitted forecaster is logged as a model) and
:mod:`models.pyfunc_model` (the logged model's code), this is the only module of the project
that talks to MLflow. The store defaults to
``sqlite:///<cwd>/mlruns/mlflow.db`` with artifacts in ``<cwd>/mlruns/artifacts`` and is
overridden by ``MLFLOW_TRACKING_URI``. Metric names are uniform across models so the UI's
chart view and parallel-coordinates plot compare them directly:
``qlike_<SYMBOL>_h<h>``, ``mse_…``, ``mz_r2_…``, ``dm_vs_garch_stat_…``, ``dm_vs_har_p_…``,
``in_mcs_…`` (1/0), with ``ALL`` for pooled figures and ``val_qlike_ALL_h<h>`` for the
validation window the champion was chosen on.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.base import BaseForecaster
from models.evaluation import EvaluationResult
from models.pyfunc_logging import log_forecaster, quiet_model_logging

EXPERIMENT = "xmargin-vol"
REGISTERED_NAME = "xmargin-vol-h{horizon}"
_REQUIREMENTS = ("numpy", "pandas", "scipy", "scikit-learn", "arch", "lightgbm", "mlflow")


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged forecaster (passed explicitly: inference is slow)."""
    pins = []
    for package in _REQUIREMENTS:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:  # pragma: no cover - all are locked dependencies
            pins.append(package)
    return pins


def tracking_uri(cwd: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the local SQLite store under ``<cwd>/mlruns``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = (cwd or Path.cwd()) / "mlruns"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def artifact_location(uri: str) -> str | None:
    """Artifact folder next to a SQLite store (``<db dir>/artifacts``), else the server's."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def _experiment_id(client: Any, experiment: str, uri: str) -> str:
    """Id of ``experiment``, created with its artifacts next to a SQLite store if missing."""
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(experiment, artifact_location=artifact_location(uri)))


def panel_digest(panel: pd.DataFrame) -> str:
    """SHA-256 (first 16 hex digits) of the panel's values and index."""
    hashed = pd.util.hash_pandas_object(panel, index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def code_version() -> str:
    """Git commit of the working tree (``unknown`` outside a repository)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass(frozen=True)
class TrackingInfo:
    """Identifiers of what an evaluation logged."""

    experiment_id: str
    parent_run_id: str
    model_run_ids: dict[str, str]
    registered: dict[str, dict[str, str]]  # registered name → alias → version


def _metrics_for(details: pd.DataFrame, model: str) -> dict[str, float]:
    rows = details[details["model"] == model]
    out: dict[str, float] = {}
    for r in rows.itertuples(index=False):
        suffix = f"{r.symbol}_h{r.horizon}"
        for col in (
            "qlike",
            "mse",
            "mz_r2",
            "dm_vs_garch_stat",
            "dm_vs_garch_p",
            "dm_vs_har_stat",
            "dm_vs_har_p",
            "qlike_ratio_garch",
            "qlike_ratio_har",
        ):
            value = float(getattr(r, col))
            if np.isfinite(value):
                out[f"{col}_{suffix}"] = value
        out[f"in_mcs_{suffix}"] = float(bool(r.in_mcs))
        out[f"n_{suffix}"] = float(r.n)
    return out


def _model_frame(result: EvaluationResult, model: str) -> pd.DataFrame:
    """Tidy ``model, horizon, symbol, date, variance`` rows of one model's forecasts."""
    parts = [
        s.rename("variance").reset_index().assign(model=m, horizon=h)
        for (m, h), s in result.walk.forecasts.items()
        if m == model
    ]
    return pd.concat(parts, ignore_index=True)[["model", "horizon", "symbol", "date", "variance"]]


def _chart_inputs(
    result: EvaluationResult, model: str
) -> tuple[dict[int, pd.Series], dict[int, pd.Series]]:
    """A model's forecasts and the realized variance on the evaluation window, per horizon."""
    forecasts: dict[int, pd.Series] = {}
    realized: dict[int, pd.Series] = {}
    for (m, h), series in result.walk.forecasts.items():
        if m != model:
            continue
        dates = series.index.get_level_values("date")
        forecasts[h] = series[(dates >= result.start) & (dates <= result.end)]
        realized[h] = result.realized[h].reindex(forecasts[h].index)
    return dict(sorted(forecasts.items())), dict(sorted(realized.items()))


def chart_pngs(
    model: str, forecasts: dict[int, pd.Series], realized: dict[int, pd.Series]
) -> dict[str, bytes]:
    """One PNG per symbol: h-day forecast vs realized variance (decimal), per horizon.

    Drawn with fixed margins, major log ticks only and plain-text tick labels: tight layout,
    minor log ticks and math-text labels made charts the costliest part of logging. One
    figure is drawn per model and its lines, limits and title are updated for each symbol,
    which saves building a figure per chart.
    """
    import io

    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter, NullLocator

    horizons = list(forecasts)
    fig = Figure(figsize=(9, 2.6 * len(horizons)))
    fig.subplots_adjust(left=0.09, right=0.98, top=0.9, bottom=0.08, hspace=0.3)
    axes = fig.subplots(len(horizons), 1, squeeze=False)[:, 0]
    out: dict[str, bytes] = {}
    for symbol in forecasts[horizons[0]].index.unique(level="symbol"):
        for ax, h in zip(axes, horizons, strict=True):
            f = forecasts[h].xs(symbol, level="symbol")
            y = realized[h].xs(symbol, level="symbol")
            # Naive datetime64 (UTC) converts far faster than tz-aware timestamps.
            x = pd.DatetimeIndex(f.index).tz_localize(None).to_numpy()
            if ax.lines:
                ax.lines[0].set_data(x, y.to_numpy())
                ax.lines[1].set_data(x, f.to_numpy())
                ax.relim()
                ax.autoscale_view()
                continue
            ax.plot(x, y.to_numpy(), color="0.7", lw=0.6, label="realized")
            ax.plot(x, f.to_numpy(), color="C0", lw=0.9, label=f"{model} forecast")
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=True))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_ylabel(f"h={h} variance")
            ax.legend(loc="upper right", fontsize=7)
        axes[0].set_title(f"{symbol}: {model} forecast vs realized (decimal variance)")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=70)
        out[str(symbol)] = buffer.getvalue()
    return out


class ChartJobs:
    """Every model's charts, drawn in the background while the caller logs to MLflow.

    With ``n_jobs > 1`` the models are drawn in forked worker processes
    (:func:`models.walkforward.process_pool`); otherwise each model is drawn on first
    request. A chart depends only on its own model's forecasts, so the PNGs are
    byte-identical either way.
    """

    def __init__(self, result: EvaluationResult, n_jobs: int = 1) -> None:
        import matplotlib.figure  # noqa: F401  (imported once here, not in every worker)

        self._inputs = {m: _chart_inputs(result, m) for m in result.walk.models}
        self._done: dict[str, dict[str, bytes]] = {}
        self._futures: dict[str, Future[dict[str, bytes]]] = {}
        self._pool: ProcessPoolExecutor | None = None
        if n_jobs > 1 and len(self._inputs) > 1:
            from models.walkforward import process_pool

            self._pool = pool = process_pool(min(n_jobs, len(self._inputs)))
            self._futures = {m: pool.submit(chart_pngs, m, *a) for m, a in self._inputs.items()}
            pool.shutdown(wait=False)  # the workers exit once the charts are drawn

    def get(self, model: str) -> dict[str, bytes]:
        """``symbol → PNG`` of one model (waits for it if it is still being drawn)."""
        if model not in self._done:
            future = self._futures.get(model)
            self._done[model] = (
                future.result() if future is not None else chart_pngs(model, *self._inputs[model])
            )
        return self._done[model]

    def all(self) -> dict[str, dict[str, bytes]]:
        """``model → symbol → PNG`` of every model (then the workers are joined)."""
        out = {m: self.get(m) for m in self._inputs}
        self.close()
        return out

    def close(self) -> None:
        """Wait for the worker processes to exit."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _all_charts(result: EvaluationResult, n_jobs: int = 1) -> dict[str, dict[str, bytes]]:
    """Charts of every model: ``model → symbol → PNG``."""
    return ChartJobs(result, n_jobs).all()


def log_evaluation(
    result: EvaluationResult,
    panel: pd.DataFrame,
    experiment: str = EXPERIMENT,
    register: bool = True,
    log_models: bool = True,
    n_jobs: int = 1,
) -> TrackingInfo:
    """Log an evaluation to MLflow and register champion and challenger per horizon.

    Parameters
    ----------
    result : EvaluationResult
        Output of :func:`models.evaluation.evaluate`.
    panel : DataFrame
        The daily panel the evaluation ran on (logged as the run's input with its digest).
    experiment : str
        MLflow experiment name.
    register : bool
        Register the champion (alias ``champion``) and runner-up (``challenger``) models
        as ``xmargin-vol-h1`` / ``xmargin-vol-h7``.
    log_models : bool
        Log each fitted model (pyfunc; LightGBM also in its own flavour).
    n_jobs : int
        Processes drawing the charts while this one logs (1 draws them here).
    """
    import mlflow
    from mlflow import MlflowClient

    # Started first: the chart workers fork before any connection to the store is open.
    charts = ChartJobs(result, n_jobs)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    experiment_id = _experiment_id(client, experiment, uri)
    digest = panel_digest(panel)
    symbols = sorted(str(s) for s in panel.index.unique(level="symbol"))
    config = result.walk.config
    window = "expanding" if config.window is None else f"rolling_{config.window}d"
    tags = {
        "symbols": ",".join(symbols),
        "window": f"{result.start.date()}..{result.end.date()}",
        "validation_window": f"{result.validation_start.date()}..{result.start.date()}",
        "training": window,
    }
    common = {
        "eval_start": str(result.start.date()),
        "eval_end": str(result.end.date()),
        "validation_start": str(result.validation_start.date()),
        "refit_every": config.refit_every,
        "horizons": ",".join(map(str, config.horizons)),
        "training_window": window,
        "data_digest": digest,
        "code_version": code_version(),
    }
    import mlflow.data.pandas_dataset

    dataset = mlflow.data.pandas_dataset.from_pandas(
        panel.reset_index(), name=f"daily_panel_{digest}", targets="target_rv_h1"
    )
    pins = pip_requirements()
    model_runs: dict[str, str] = {}
    model_uris: dict[tuple[str, int], str] = {}
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"evaluate {result.start.date()}..{result.end.date()}",
        tags={**tags, "kind": "evaluation"},
    ) as parent:
        mlflow.log_params({**common, "models": ",".join(result.walk.models)})
        with warnings.catch_warnings():
            # The dataset's schema is inferred here; its integer column (n_hours) never
            # has missing values, so MLflow's hint about integer columns does not apply.
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column")
            mlflow.log_input(dataset, context="evaluation")
        with tempfile.TemporaryDirectory() as tmp:
            table = Path(tmp) / "forecast_metrics.csv"
            result.metrics.to_csv(table, index=False)
            mlflow.log_artifact(str(table))
        for h, sel in result.selections.items():
            mlflow.set_tags(
                {
                    "selection_rule": sel.rule,
                    f"champion_h{h}": sel.champion,
                    f"challenger_h{h}": sel.challenger or "",
                    f"champion_h{h}_reason": sel.reason,
                }
            )
        for model in result.walk.models:
            fitted = result.walk.fitted[model]
            with mlflow.start_run(
                experiment_id=experiment_id,
                run_name=model,
                nested=True,
                tags={**tags, "kind": "model", "model": model},
            ) as child:
                model_runs[model] = child.info.run_id
                hyper = {f"hp_{k}": str(v) for k, v in fitted.get_params(deep=False).items()}
                mlflow.log_params({**common, **hyper, "model": model})
                # Models first: MLflow links a run's existing metrics to every model logged
                # after them, one history query per metric and model.
                if log_models:
                    for h, uri_h in log_forecaster(fitted, config.horizons, pins).items():
                        model_uris[(model, h)] = uri_h
                        _log_lightgbm(fitted, h, pins)
                metrics = _metrics_for(result.details, model)
                metrics["n_fallbacks"] = float(len(result.walk.fallbacks[model]))
                metrics["walkforward_seconds"] = float(result.walk.seconds[model])
                for h, sel in result.selections.items():
                    if model in sel.scores.index:
                        metrics[f"val_qlike_ALL_h{h}"] = float(sel.scores[model])
                mlflow.log_metrics(metrics)
                with tempfile.TemporaryDirectory() as tmp:
                    folder = Path(tmp)
                    _model_frame(result, model).to_parquet(
                        folder / "forecasts.parquet", index=False
                    )
                    (folder / "charts").mkdir()
                    for symbol, png in charts.get(model).items():
                        (folder / "charts" / f"{symbol}.png").write_bytes(png)
                    mlflow.log_artifacts(tmp)  # forecasts.parquet and charts/ in one copy
        charts.close()
        registered = _register(client, result, model_uris, model_runs) if register else {}
    return TrackingInfo(experiment_id, parent.info.run_id, model_runs, registered)


def _log_lightgbm(fitted: BaseForecaster, horizon: int, pins: list[str]) -> None:
    """Also log LightGBM boosters in MLflow's LightGBM flavour (feature-level model)."""
    regressors = getattr(fitted, "regressors_", None)
    if fitted.name != "lgbm" or not regressors:
        return
    import mlflow.lightgbm

    for (key, h), reg in regressors.items():
        if h == horizon:
            suffix = "" if key == "*" else f"_{key}"
            # The booster (LightGBM's own text format), not the scikit-learn wrapper: no
            # pickle, and no import of MLflow's scikit-learn flavour (seconds per run).
            with quiet_model_logging():
                mlflow.lightgbm.log_model(
                    reg.estimator_.booster_, name=f"lightgbm_h{h}{suffix}", pip_requirements=pins
                )


def _register(
    client: Any,
    result: EvaluationResult,
    model_uris: dict[tuple[str, int], str],
    model_runs: dict[str, str],
) -> dict[str, dict[str, str]]:
    import mlflow

    out: dict[str, dict[str, str]] = {}
    for h, sel in result.selections.items():
        name = REGISTERED_NAME.format(horizon=h)
        out[name] = {}
        for alias, model in (("champion", sel.champion), ("challenger", sel.challenger)):
            if model is None or (model, h) not in model_uris:
                continue
            mv = mlflow.register_model(model_uris[(model, h)], name)
            client.set_registered_model_alias(name, alias, mv.version)
            client.set_model_version_tag(name, mv.version, "selection_rule", sel.rule)
            client.set_model_version_tag(name, mv.version, "reason", sel.reason)
            client.set_model_version_tag(name, mv.version, "model", model)
            client.set_tag(model_runs[model], f"{alias}_h{h}", "true")
            client.set_tag(model_runs[model], f"{alias}_h{h}_reason", sel.reason)
            out[name][alias] = str(mv.version)
    return out


PARAMETERS_EXPERIMENT = "xmargin-parameters"


def log_parameter_run(
    *,
    as_of: str,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    artifacts: Mapping[str, bytes],
    tags: Mapping[str, str] | None = None,
    experiment: str = PARAMETERS_EXPERIMENT,
) -> str:
    """Log one published parameter set as a run of the parameters experiment.

    One run per set, named ``parameters <as_of>``, so a risk team compares breach rates,
    Kupiec p-values and margin levels across days in the MLflow UI.

    Parameters
    ----------
    as_of : str
        The parameter set's as-of date (ISO).
    params : Mapping[str, str]
        Run parameters (champion, confidences, horizon, parameter-set id, data digest).
    metrics : Mapping[str, float]
        Flat metrics, e.g. ``margin.backtest.backtest_metrics`` (``bt_breach_rate_BTC_IM_long``)
        and the scan ranges; non-finite values are left out.
    artifacts : Mapping[str, bytes]
        Files to attach under ``report/`` (file name → content).
    tags : Mapping[str, str], optional
        Extra tags (e.g. the forecasting run the parameters came from).
    experiment : str
        MLflow experiment name.

    Returns
    -------
    str
        The run id.
    """
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    client = MlflowClient(uri, uri)
    experiment_id = _experiment_id(client, experiment, uri)
    run = client.create_run(
        experiment_id,
        run_name=f"parameters {as_of}",
        tags={"kind": "parameters", "as_of": as_of, **(tags or {})},
    )
    run_id: str = run.info.run_id
    finite = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[mlflow.entities.Metric(k, v, now, 0) for k, v in sorted(finite.items())],
        params=[mlflow.entities.Param(k, str(v)) for k, v in sorted(params.items())],
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, content in artifacts.items():
            (folder / name).write_bytes(content)
        client.log_artifacts(run_id, str(folder), "report")
    client.set_terminated(run_id)
    return run_id


# --- backtest runs ---

BACKTEST_EXPERIMENT = "xmargin-backtest"


@dataclass(frozen=True)
class BacktestTracking:
    """Identifiers of a logged backtest: the parent run and one nested run per model."""

    experiment_id: str
    parent_run_id: str
    model_run_ids: dict[str, str]


def log_backtest_run(
    *,
    run_name: str,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    model_metrics: Mapping[str, Mapping[str, float]],
    artifacts: Mapping[str, Path],
    tags: Mapping[str, str] | None = None,
    model_tags: Mapping[str, Mapping[str, str]] | None = None,
    experiment: str = BACKTEST_EXPERIMENT,
) -> BacktestTracking:
    """Log one ``xmargin backtest`` invocation: a parent run and one nested run per model.

    Every run gets its metrics and parameters in one batch call (``MlflowClient.log_batch``);
    the parent holds the artifacts. A failure marks the runs ``FAILED`` and re-raises.

    Parameters
    ----------
    run_name : str
        Name of the parent run (e.g. ``backtest 2022-01-01..2024-12-31``).
    params : Mapping[str, object]
        Settings of the invocation (windows, confidences, horizon, APC, data digest, code
        version); logged on the parent and on every nested run, as strings.
    metrics : Mapping[str, float]
        Metrics of the parent (pooled figures, APC variants, portfolios).
    model_metrics : Mapping[str, Mapping[str, float]]
        Model name (a forecaster, ``static``, ``champion``) → its metrics, e.g.
        ``margin.backtest.run_metrics`` (``breach_rate_BTC_IM_long``); one nested run each,
        named after the model. Non-finite values are left out.
    artifacts : Mapping[str, Path]
        Artifact path in the parent run (``backtest_summary.csv``, ``charts/x.png``) → file.
    tags : Mapping[str, str], optional
        Tags of the parent (champion, champion rule and reason, window).
    model_tags : Mapping[str, Mapping[str, str]], optional
        Extra tags per nested run.
    experiment : str
        MLflow experiment name.

    Returns
    -------
    BacktestTracking
        Experiment id, parent run id and run id per model.
    """
    import shutil

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    uri = tracking_uri()
    client = MlflowClient(uri, uri)
    experiment_id = _experiment_id(client, experiment, uri)
    base_tags = {"kind": "backtest", **(tags or {})}
    run_params = [Param(k, str(v)) for k, v in sorted(params.items())]
    now = int(time.time() * 1000)

    def batch(values: Mapping[str, float]) -> list[Metric]:
        finite = {k: float(v) for k, v in values.items() if np.isfinite(v)}
        return [Metric(k, v, now, 0) for k, v in sorted(finite.items())]

    parent = client.create_run(experiment_id, run_name=run_name, tags=base_tags)
    parent_id: str = parent.info.run_id
    open_runs = [parent_id]
    try:
        client.log_batch(parent_id, metrics=batch(metrics), params=run_params)
        model_runs: dict[str, str] = {}
        for model, values in model_metrics.items():
            child_tags = {
                **base_tags,
                "mlflow.parentRunId": parent_id,
                "kind": "backtest_model",
                "model": model,
                **(model_tags or {}).get(model, {}),
            }
            child = client.create_run(experiment_id, run_name=model, tags=child_tags)
            run_id: str = child.info.run_id
            open_runs.append(run_id)
            client.log_batch(
                run_id,
                metrics=batch(values),
                params=[*run_params, Param("model", model)],
            )
            model_runs[model] = run_id
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for name, source in artifacts.items():
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            client.log_artifacts(parent_id, str(folder))
    except BaseException:
        for run_id in open_runs:
            client.set_terminated(run_id, status="FAILED")
        raise
    for run_id in reversed(open_runs):
        client.set_terminated(run_id)
    return BacktestTracking(experiment_id, parent_id, model_runs)
