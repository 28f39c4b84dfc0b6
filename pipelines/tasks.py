"""Prefect tasks: each one calls one public function of ``features``, ``models`` or ``margin``.

Tasks hold no maths. They name the step, retry where a file system can fail, cache where a
step is expensive and its inputs have a digest, and log what a risk officer needs to read
(counts, fallbacks, bounds that bit). Heavy packages are imported inside the tasks so that
importing the flows stays cheap.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from pipelines.config import XmarginConfig

if TYPE_CHECKING:
    from features.history import MarketHistory
    from margin.backtest import BacktestResult
    from margin.book import Book
    from margin.methodology import Methodology
    from margin.parameters import ParameterSet
    from margin.params import WrittenSet
    from margin.result import MarginResult
    from models.evaluation import EvaluationResult
    from models.selection import Selection
    from models.walkforward import WalkForwardResult

PARAMS_STORE = "params"
"""Folder under the output root holding the signed, versioned parameter store."""

IO_RETRIES = 2
"""Retries of tasks that read or write files (a busy or network file system can fail)."""
IO_BACKOFF = exponential_backoff(backoff_factor=2)


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's index and values (stable across processes)."""
    hashed = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- data


@task(
    name="digest-market-data",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def digest_market_data(data_dir: Path, symbols: Sequence[str]) -> str:
    """SHA-256 over the SHA-256 of every data file of ``symbols`` (the run's data digest)."""
    from features.cache import file_digest
    from features.layout import discover, relative_name

    files = sorted(discover(data_dir, list(symbols)), key=lambda f: str(f.path))
    digest = hashlib.sha256()
    for item in files:
        digest.update(f"{relative_name(item.path, data_dir)}:{file_digest(item.path)}\n".encode())
    get_run_logger().info("Data digest over %d files: %s", len(files), digest.hexdigest()[:16])
    return digest.hexdigest()


@task(
    name="load-market-history",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def load_history(
    data_dir: Path, symbols: Sequence[str], start: dt.date, end: dt.date | None
) -> MarketHistory:
    """Load and validate hourly history (``features.history.load_market_history``)."""
    from features.history import load_market_history

    end_ts = None if end is None else pd.Timestamp(end, tz="UTC") + pd.Timedelta(hours=23)
    history = load_market_history(data_dir, list(symbols), pd.Timestamp(start, tz="UTC"), end_ts)
    log = get_run_logger()
    for symbol in history.symbols:
        log.info("%s: %d hourly spot bars loaded", symbol, len(history.spot[symbol]))
    report = history.report
    if not report.empty:
        for column in ("missing", "missing_bars", "dropped"):
            if column in report.columns:
                log.info(
                    "Cleaning: %s = %d across %d files",
                    column,
                    int(report[column].sum()),
                    len(report),
                )
    return history


@task(name="build-daily-panel", cache_policy=NO_CACHE)
def build_panel(history: MarketHistory, symbols: Sequence[str]) -> pd.DataFrame:
    """Daily realized measures and features (``features.matrix.build_daily_panel``)."""
    from features.matrix import build_daily_panel

    panel = build_daily_panel(history, list(symbols))
    get_run_logger().info(
        "Daily panel: %d rows × %d columns for %s", len(panel), panel.shape[1], ", ".join(symbols)
    )
    return panel


@task(name="resolve-as-of", cache_policy=NO_CACHE)
def resolve_as_of(panel: pd.DataFrame, as_of: dt.date | None) -> dt.date:
    """The as-of date: the one asked for, or the last day every symbol has a complete bar set."""
    dates = panel.index.get_level_values("date")
    complete = ~panel["incomplete"].astype(bool) if "incomplete" in panel else dates.notna()
    last_per_symbol = (
        pd.Series(dates[complete]).groupby(panel.index.get_level_values("symbol")[complete]).max()
    )
    last_common = pd.Timestamp(last_per_symbol.min()).date()
    if as_of is None:
        get_run_logger().info("As-of date not given: using %s, the last complete day", last_common)
        return last_common
    if as_of > last_common:
        raise ValueError(
            f"--as-of {as_of} is after the last complete day of the data ({last_common})"
        )
    return as_of


# ----------------------------------------------------------------------------- forecasters


def _package_digest(package: str) -> str:
    """SHA-256 over a package's source files, so cached results die with code changes."""
    import importlib

    module = importlib.import_module(package)
    root = Path(module.__file__ or "").parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


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
            + hashlib.sha256(f"{self!r}|{_package_digest('models')}".encode()).hexdigest()
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


@task(name="panel-digest", cache_policy=NO_CACHE)
def panel_digest(panel: pd.DataFrame) -> str:
    """Digest of the daily panel (the key of cached walk-forward results)."""
    return frame_digest(panel)


# ----------------------------------------------------------------------------- parameters


def _previous_version(root: Path, day: dt.date) -> Path | None:
    """The newest published version with an as-of date before ``day``.

    Comparing with the set before this as-of date (not with the newest file) makes a rerun
    for the same date produce the same bytes.
    """
    from margin.params import iter_versions

    earlier = [p for p in iter_versions(root) if p.name[:10] < day.isoformat()]
    return earlier[-1] if earlier else None


@task(
    name="load-previous-parameters",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def load_previous_parameters(root: Path, day: dt.date) -> ParameterSet | None:
    """The verified parameter set published before ``day`` (``margin.params.load``)."""
    from margin.params import load

    folder = _previous_version(root, day)
    log = get_run_logger()
    if folder is None:
        log.info("No earlier parameter file under %s: first publication", root)
        return None
    previous = load(folder, verify=True)
    log.info("Previous parameters: %s (as of %s)", folder.name, previous.as_of)
    return previous


def _code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"xmargin {version('xmargin')}"
    except PackageNotFoundError:
        return "xmargin (source)"


@dataclass(frozen=True)
class Tracked:
    """What MLflow recorded about the champion (``None`` fields when nothing was logged)."""

    run_id: str | None = None
    registry_version: str | None = None
    parent_run_id: str | None = None


@task(name="calibrate-parameters", cache_policy=NO_CACHE)
def calibrate(
    panel: pd.DataFrame,
    forecast: pd.Series,
    champion: str,
    day: dt.date,
    cfg: XmarginConfig,
    previous: ParameterSet | None,
    data_digest: str,
    tracked: Tracked,
) -> ParameterSet:
    """Risk parameters per underlying (``margin.calibration.calibrate_underlying``) and the
    cross-underlying offsets (``margin.calibration.calibrate_offsets``) as one set."""
    from margin.calibration import (
        CalibrationError,
        UnderlyingInputs,
        calibrate_offsets,
        calibrate_underlying,
        proxy_scale,
    )
    from margin.parameters import ParameterSet, Provenance
    from margin.params import changes_against, utc_midnight_after

    log = get_run_logger()
    cal = cfg.calibration
    cutoff = pd.Timestamp(day, tz="UTC")
    symbols = list(dict.fromkeys(panel.index.get_level_values("symbol")))
    daily = {s: panel.xs(s, level="symbol") for s in symbols}
    scale = 1.0
    for symbol in symbols:
        if "dvol" in daily[symbol] and daily[symbol]["dvol"].notna().any():
            try:
                scale = proxy_scale(daily[symbol]["dvol"], daily[symbol]["rv"], cal.horizon_days)
                log.info("Vol-shock proxy scale %.3f from %s DVOL vs realized vol", scale, symbol)
                break
            except CalibrationError as exc:
                log.warning("No vol-shock proxy scale from %s: %s", symbol, exc)
    underlyings = {}
    forecast_symbols = set(forecast.index.get_level_values("symbol"))
    for symbol in symbols:
        variance = forecast.xs(symbol, level="symbol") if symbol in forecast_symbols else None
        inputs = UnderlyingInputs(symbol, daily[symbol], variance, champion, scale)
        prior = None if previous is None else previous.underlyings.get(symbol)
        params = calibrate_underlying(inputs, day, cal, cfg.apc, prior)
        underlyings[symbol] = params
        if params.fallback.used:
            log.warning(
                "%s: FALLBACK to %s parameters: %s",
                symbol,
                params.fallback.source,
                params.fallback.reason,
            )
        for event in params.apc.bounds_bit:
            log.info(
                "%s: %s bit on %s (%.4f → %.4f)",
                symbol,
                event.rule,
                event.field,
                event.raw,
                event.bounded,
            )
    returns = panel["ret"].unstack("symbol")[symbols]
    returns = returns[returns.index <= cutoff]
    offsets = calibrate_offsets(returns, cal)
    draft = ParameterSet(
        as_of=day,
        effective_from=utc_midnight_after(day),
        horizon_days=cal.horizon_days,
        im_confidence=cal.im_confidence,
        mm_confidence=cal.mm_confidence,
        underlyings=underlyings,
        offsets=offsets,
        provenance=Provenance(
            model=champion,
            mlflow_run_id=tracked.run_id,
            registry_version=tracked.registry_version,
            data_digest=data_digest,
            code_version=_code_version(),
        ),
    )
    previous_version = None
    if previous is not None:
        folder = _previous_version(cfg.out_dir / PARAMS_STORE, day)
        previous_version = None if folder is None else folder.name
    changes = tuple(changes_against(draft, previous))
    n_fallbacks = sum(p.fallback.used for p in underlyings.values())
    n_bounds = sum(len(p.apc.bounds_bit) for p in underlyings.values())
    log.info(
        "Calibrated %d underlyings: %d fallback(s), %d bound event(s), %d change(s)",
        len(underlyings),
        n_fallbacks,
        n_bounds,
        len(changes),
    )
    return draft.model_copy(update={"changes": changes, "previous_version": previous_version})


@task(name="backtest-parameters", cache_policy=NO_CACHE)
def backtest_parameters(
    panel: pd.DataFrame, forecast: pd.Series, champion: str, day: dt.date, cfg: XmarginConfig
) -> BacktestResult:
    """Walk-forward backtest of the champion's margin and a static baseline over the last
    ``[backtest] days`` (``margin.backtest.parameter_backtest``)."""
    from margin.backtest import BacktestConfig, parameter_backtest

    config = BacktestConfig(
        horizon_days=cfg.calibration.horizon_days,
        im_confidence=cfg.calibration.im_confidence,
        mm_confidence=cfg.calibration.mm_confidence,
        min_residuals=cfg.calibration.min_residuals,
        residual_lookback=cfg.calibration.residual_lookback,
        min_scan_range=cfg.calibration.min_scan_range,
        validation_days=cfg.backtest.validation_days,
        apc=cfg.apc,
    )
    start = day - dt.timedelta(days=cfg.backtest.days - 1)
    result = parameter_backtest(panel[["close"]], {champion: forecast}, start, day, config)
    log = get_run_logger()
    rows = result.summary[
        (result.summary["model"] == "champion") & (result.summary["level"] == "IM")
    ]
    for row in rows.itertuples():
        log.info(
            "Backtest %s IM %-5s: %d/%d breaches (expected %.1f), zone %s",
            row.symbol,
            row.side,
            row.breaches,
            row.n,
            row.expected_rate * row.n,
            row.zone,
        )
    return result


@task(name="attach-backtest", cache_policy=NO_CACHE)
def attach_backtest(params: ParameterSet, summary: pd.DataFrame) -> ParameterSet:
    """Carry the backtest summary inside the parameter set (validated row by row)."""
    from margin.parameters import BacktestRow, ParameterSet

    clean = summary.astype(object).where(summary.notna(), None)
    rows = tuple(BacktestRow.model_validate(r) for r in clean.to_dict(orient="records"))
    return ParameterSet.model_validate(
        {**params.model_dump(), "backtest_summary": [r.model_dump() for r in rows]}
    )


def _signing_key(cfg: XmarginConfig) -> Any:
    """The configured Ed25519 key; the default ``keys/xmargin.key`` is created on first use."""
    from margin.keys import PRIVATE_KEY_NAME, generate_keypair, load_private_key

    if cfg.params.private_key is not None:
        return load_private_key(cfg.resolve(cfg.params.private_key))
    folder = cfg.base_dir / "keys"
    path = folder / PRIVATE_KEY_NAME
    if not path.exists():
        private, public = generate_keypair(folder)
        get_run_logger().warning(
            "No signing key configured: generated %s (public key %s); give the public key to "
            "the exchange and keep the private key safe", private, public,
        )  # fmt: skip
    return load_private_key(path)


@task(
    name="publish-parameters",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def publish_parameters(params: ParameterSet, cfg: XmarginConfig) -> WrittenSet:
    """Sign and publish the set atomically (``margin.params.write_parameter_set``)."""
    from margin.params import write_parameter_set

    root = cfg.out_dir / PARAMS_STORE
    written = write_parameter_set(params, root, _signing_key(cfg))
    get_run_logger().info("Published parameter set %s under %s", written.version, root)
    return written


# ----------------------------------------------------------------------------- report and outputs


def margin_path_frame(result: BacktestResult, champion: str) -> pd.DataFrame:
    """The champion's daily IM/MM scan ranges and realized moves over the backtest window."""
    parts = []
    for (model, symbol), frame in result.margins.items():
        if model != champion:
            continue
        moves = result.moves[symbol]
        window = frame[(frame.index >= result.start) & (frame.index <= result.end)]
        parts.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "date": window.index,
                    "im_long": window["IM_long"].to_numpy(),
                    "im_short": window["IM_short"].to_numpy(),
                    "mm_long": window["MM_long"].to_numpy(),
                    "mm_short": window["MM_short"].to_numpy(),
                    "move": moves.reindex(window.index).to_numpy(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def forecast_frame(comparison: ModelComparison, horizon: int) -> pd.DataFrame:
    """The champion's out-of-sample forecasts and the realized variance, evaluation window."""
    series = comparison.forecasts[(comparison.champion, horizon)]
    frame = series.rename("forecast_var").to_frame()
    frame["realized_var"] = comparison.realized.reindex(frame.index).to_numpy()
    frame = frame.reset_index()
    start = pd.Timestamp(comparison.eval_start, tz="UTC")
    return frame[frame["date"] >= start].dropna().reset_index(drop=True)


def changes_frame(params: ParameterSet) -> pd.DataFrame:
    """Parameter changes against the previous file, as report rows."""
    rows = [
        {"symbol": c.underlying, "parameter": c.field, "previous": c.previous, "current": c.current}
        for c in params.changes
    ]
    return pd.DataFrame(rows, columns=["symbol", "parameter", "previous", "current"])


def _notes(comparison: ModelComparison, params: ParameterSet) -> tuple[str, ...]:
    notes = [comparison.selection.reason]
    for model, count in sorted(comparison.fallbacks.items()):
        if count:
            notes.append(f"{model}: {count} fit(s) fell back during the walk-forward")
    for symbol, p in sorted(params.underlyings.items()):
        if p.fallback.used:
            notes.append(f"{symbol}: parameters from {p.fallback.source} ({p.fallback.reason})")
        for e in p.apc.bounds_bit:
            notes.append(f"{symbol}: {e.rule} bit on {e.field} ({e.raw:.4f} → {e.bounded:.4f})")
    return tuple(notes)


@task(name="build-report", cache_policy=NO_CACHE)
def build_report(
    comparison: ModelComparison,
    backtest: BacktestResult,
    params: ParameterSet,
    horizon: int,
) -> tuple[str, dict[str, bytes]]:
    """Render the HTML report and its charts (``pipelines.report``)."""
    from pipelines.report import ReportInputs, build_charts, render_report

    inputs = ReportInputs(
        as_of=params.as_of.isoformat(),
        champion=comparison.champion,
        forecasts=forecast_frame(comparison, horizon),
        margin_path=margin_path_frame(backtest, comparison.champion),
        metrics=comparison.metrics,
        backtest=backtest.summary,
        changes=changes_frame(params),
        notes=_notes(comparison, params),
    )
    charts = build_charts(inputs)
    return render_report(inputs, charts), charts


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, float_format="%.10g", lineterminator="\n").encode()


@task(
    name="write-run-folder",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def write_run_folder(
    cfg: XmarginConfig,
    day: dt.date,
    published: WrittenSet,
    backtest: BacktestResult,
    comparison: ModelComparison,
    report_html: str,
) -> Path:
    """Stage ``out/<as-of>/`` (parameter files, backtest summary, metrics, report) and
    switch it in atomically (``pipelines.outputs.publish_run_folder``)."""
    from margin.backtest import SUMMARY_COLUMNS
    from pipelines.outputs import publish_run_folder

    files = {name: (published.folder / name).read_bytes() for name in published.files}
    files["backtest_summary.csv"] = _csv(backtest.summary[list(SUMMARY_COLUMNS)])
    files["forecast_metrics.csv"] = _csv(comparison.metrics)
    files["report.html"] = report_html.encode()
    link = publish_run_folder(cfg.out_dir, day.isoformat(), files)
    get_run_logger().info("Run folder %s → %s (%d files)", link, link.resolve().name, len(files))
    return link


@task(
    name="write-backtest-summary",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def write_backtest_summary(result: BacktestResult, folder: Path) -> Path:
    """``backtest_summary.csv`` (columns of ``margin.backtest.SUMMARY_COLUMNS``), atomically."""
    from margin.backtest import SUMMARY_COLUMNS
    from pipelines.report import write_text_atomic

    path = folder / "backtest_summary.csv"
    write_text_atomic(path, _csv(result.summary[list(SUMMARY_COLUMNS)]).decode())
    get_run_logger().info("Backtest summary: %s (%d rows)", path, len(result.summary))
    return path


@task(
    name="sync-market-data",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def sync_market_data(data_dir: Path, symbols: Sequence[str]) -> int:
    """Refresh the data folder from the local mirror (``features.sync.sync_from_mirror``)."""
    from features.errors import MissingDataError
    from features.sync import default_mirror, sync_from_mirror

    mirror = default_mirror()
    if mirror is None:
        raise MissingDataError(
            "[data] sync = true but no mirror folder (../shared/data) exists; run "
            "'xmargin data sync --source ccxt' or set sync = false"
        )
    result = sync_from_mirror(mirror, data_dir, list(symbols))
    get_run_logger().info(
        "Synced %d files from %s: %d copied, %d unchanged",
        result.total,
        mirror,
        len(result.copied),
        len(result.unchanged),
    )
    return result.total


# ----------------------------------------------------------------------------- margin a book


@task(
    name="load-parameters",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def load_parameters(path: Path, public_key: Path | None) -> ParameterSet:
    """A verified parameter set (``margin.params.load`` with ``verify=True``)."""
    from margin.keys import load_public_key
    from margin.params import load

    key = None if public_key is None else load_public_key(public_key)
    params = load(path, verify=True, public_key=key)
    get_run_logger().info(
        "Parameters as of %s verified (%d underlyings)", params.as_of, len(params.underlyings)
    )
    return params


@task(name="load-book", cache_policy=NO_CACHE, retries=IO_RETRIES, retry_delay_seconds=IO_BACKOFF)
def load_book(folder: Path) -> Book:
    """The book of accounts (``margin.book.load_book``)."""
    from margin.book import load_book as load

    book = load(folder)
    get_run_logger().info("Book: %d accounts, %d positions", book.n_accounts, book.positions.nnz)
    return book


def methodology_for(params: ParameterSet, underlyings: Sequence[str]) -> Methodology:
    """The engine methodology a published parameter set prescribes for these underlyings.

    A field-by-field translation, no calibration: per underlying the scan grid spans the
    larger IM scan range of the two sides, vol shocks, DTE powers, floor, minimum shocked vol
    and tail moves/weights come from the file; MM is the IM scenario part scaled by the
    largest MM/IM scan-range ratio of the set (one loss factor per methodology); collateral
    haircuts (MM, and the IM excess as an IM add-on) and the stressed correlations with the
    file's offset cap give the cross-underlying offsets.

    Raises
    ------
    ValueError
        An underlying of the book has no parameters in the file.
    """
    from margin.methodology import Methodology, OffsetConfig, ScenarioConfig

    missing = [u for u in underlyings if u not in params.underlyings]
    if missing:
        raise ValueError(
            f"the parameter file (as of {params.as_of}) has no parameters for underlying "
            f"{missing[0]} of the book"
        )
    scenarios = {}
    ratios = []
    for name in underlyings:
        p = params.underlyings[name]
        im = max(p.scan_im.long, p.scan_im.short)
        ratios.append(max(p.scan_mm.long, p.scan_mm.short) / im)
        scenarios[name] = ScenarioConfig(
            price_range=min(im, 0.99),
            vol_up=p.vol_shock.up,
            vol_down=p.vol_shock.down,
            short_term_power=p.vol_shock.power_short_dte,
            long_term_power=p.vol_shock.power_long_dte,
            dte_floor_days=p.vol_shock.dte_floor_days,
            min_vol=p.vol_shock.min_shocked_vol,
            tail_moves=tuple(t.move for t in p.tails),
            tail_weights=tuple(t.weight for t in p.tails),
        )
    offsets = OffsetConfig(mode="none")
    if params.offsets is not None and len(underlyings) > 1:
        matrix = params.offsets.stressed
        order = [matrix.symbols.index(u) for u in underlyings]
        offsets = OffsetConfig(
            mode="correlation",
            cap=params.offsets.offset_cap,
            underlyings=tuple(underlyings),
            correlation=tuple(tuple(matrix.values[i][j] for j in order) for i in order),
        )
    return Methodology(
        scenarios=scenarios,
        im_loss_factor=1.0,
        mm_loss_factor=min(max(ratios), 1.0),
        offsets=offsets,
        haircuts_mm={u: params.underlyings[u].haircut.mm for u in underlyings},
        haircuts_im_extra={
            u: params.underlyings[u].haircut.im - params.underlyings[u].haircut.mm
            for u in underlyings
        },
    )


@task(name="methodology-from-parameters", cache_policy=NO_CACHE)
def methodology_from_parameters(params: ParameterSet, book: Book) -> Methodology:
    """The methodology for the book's underlyings (:func:`methodology_for`)."""
    methodology = methodology_for(params, list(book.market.underlyings))
    get_run_logger().info(
        "Methodology from parameters as of %s for %s (MM loss factor %.3f)",
        params.as_of, ", ".join(book.market.underlyings), methodology.mm_loss_factor,
    )  # fmt: skip
    return methodology


@task(name="shard-book", cache_policy=NO_CACHE)
def shard_book(book: Book, shards: int) -> list[Book]:
    """Contiguous account shards (``Book.select_accounts``); one shard when ``shards`` is 1."""
    from pipelines.dask_runner import account_shards

    if shards <= 1:
        return [book]
    return [book.select_accounts(rows) for rows in account_shards(book.n_accounts, shards)]


@task(name="margin-shard", cache_policy=NO_CACHE)
def margin_shard(book: Book, methodology: Methodology) -> MarginResult:
    """Margin of one shard of accounts (``margin.engine.compute_margin``)."""
    from margin.engine import compute_margin

    return compute_margin(book, methodology, n_threads=1)


@task(name="stack-shards", cache_policy=NO_CACHE)
def stack_shards(parts: Sequence[MarginResult]) -> MarginResult:
    """The whole book's result from its shards, in account order (``MarginResult.concat``)."""
    from margin.result import MarginResult as Result

    return Result.concat(list(parts))


@task(name="liquidation-plans", cache_policy=NO_CACHE)
def liquidation_plans(
    book: Book, methodology: Methodology, result: MarginResult, params: ParameterSet
) -> pd.DataFrame:
    """Orders for every account under MM (``margin.liquidation.liquidation_plan``), with the
    square-root impact model on the file's one-day volatilities."""
    import math

    from margin.liquidation import liquidation_plan

    sigma = {
        u: params.underlyings[u].sigma / math.sqrt(params.horizon_days)
        for u in book.market.underlyings
    }
    plan = liquidation_plan(book, methodology, result, sigma_daily=sigma)
    get_run_logger().info("Liquidation plans: %d orders", len(plan))
    return plan


@task(
    name="write-margin-results",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def write_margin_results(result: MarginResult, plan: pd.DataFrame, out_file: Path) -> Path:
    """One row per account (CSV or Parquet by the suffix) and the liquidation orders next to
    it (``<stem>_liquidations.<suffix>``), each written atomically."""
    frame = result.to_frame().reset_index()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    orders = out_file.with_name(f"{out_file.stem}_liquidations{out_file.suffix}")
    for path, table in ((out_file, frame), (orders, plan)):
        tmp = path.with_name(f".{path.name}.tmp")
        if path.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False, float_format="%.10g", lineterminator="\n")
        tmp.replace(path)
    n_liq = int(result.liquidatable.sum())
    get_run_logger().info(
        "Margin of %d accounts written to %s; %d under maintenance margin, plans in %s",
        len(result), out_file, n_liq, orders.name,
    )  # fmt: skip
    return out_file


# ----------------------------------------------------------------------------- MLflow


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
        _package_digest("models"),
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
