"""Tasks of the parameter steps: calibrate, backtest, sign and publish."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import XmarginConfig
from pipelines.tasks.common import IO_BACKOFF, IO_RETRIES, PARAMS_STORE, csv_bytes

if TYPE_CHECKING:
    from margin.backtest import BacktestResult
    from margin.parameters import ParameterSet
    from margin.params import WrittenSet
    from pipelines.tasks.tracking import Tracked


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
    offsets = None  # one underlying: nothing to offset
    if len(symbols) > 1:
        returns = panel["ret"].unstack("symbol")[symbols]
        offsets = calibrate_offsets(returns[returns.index <= cutoff], cal)
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
    write_text_atomic(path, csv_bytes(result.summary[list(SUMMARY_COLUMNS)]).decode())
    get_run_logger().info("Backtest summary: %s (%d rows)", path, len(result.summary))
    return path
