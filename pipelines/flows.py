"""Prefect flows: ``update-parameters``, ``backtest`` and ``compute-margins``.

Each flow is a short list of named tasks (see :mod:`pipelines.tasks`); the flows hold no
maths. Flow parameters are plain JSON values (a config file path, an as-of date, symbols) so
the same flows run from the CLI, from a scheduled deployment and from tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, unmapped

from pipelines import tasks
from pipelines.config import XmarginConfig, load_config
from pipelines.dask_runner import task_runner
from pipelines.summary import advance

if TYPE_CHECKING:
    from margin.book import Book
    from margin.methodology import Methodology
    from margin.parameters import ParameterSet
    from margin.result import MarginResult


STEPS = (
    "loading market history",
    "building daily features",
    "walking forecasters forward",
    "forecasting with the champion, recording models in MLflow",
    "waiting for MLflow",
    "calibrating parameters",
    "backtesting parameters",
    "publishing signed files",
    "writing the report",
)


@dataclass(frozen=True)
class RunOutcome:
    """Where an ``update-parameters`` run left its results."""

    as_of: str
    run_folder: Path
    params_folder: Path
    champion: str
    files: dict[str, str]
    params: ParameterSet
    previous: ParameterSet | None


def _config(
    config_file: str | None,
    data_dir: str | None = None,
    symbols: list[str] | None = None,
    out_dir: str | None = None,
) -> XmarginConfig:
    cfg = load_config(config_file)
    return cfg.with_overrides(
        data={"dir": data_dir, "symbols": symbols}, params={"out_dir": out_dir}
    )


@flow(name="update-parameters", log_prints=True)
def update_parameters(
    config_file: str | None = None,
    as_of: str | None = None,
    symbols: list[str] | None = None,
    data_dir: str | None = None,
    out_dir: str | None = None,
) -> dict[str, Any]:
    """History → features → forecasters → champion → parameters → backtest → files → report.

    Parameters
    ----------
    config_file
        TOML configuration (``None``: ``./xmargin.toml`` or the built-in defaults).
    as_of
        As-of date ``YYYY-MM-DD``; ``None`` uses the last complete day of the data.
    symbols, data_dir, out_dir
        Override the configuration.

    Returns
    -------
    dict
        ``as_of``, ``champion``, ``run_folder``, ``params_folder`` and the SHA-256 of each file.
    """
    cfg = _config(config_file, data_dir, symbols, out_dir)
    day = None if as_of is None else dt.date.fromisoformat(as_of)
    if cfg.dask.address:  # the tasks go to the configured cluster (a subflow with its runner)
        runner = task_runner(cfg.dask.address, cfg.run.max_workers)
        outcome = update_parameters_for_config.with_options(task_runner=runner)(cfg, day)
    else:
        outcome = _update(cfg, day)
    return {
        "as_of": outcome.as_of,
        "champion": outcome.champion,
        "run_folder": str(outcome.run_folder),
        "params_folder": str(outcome.params_folder),
        "files": outcome.files,
    }


def _evaluate(cfg: XmarginConfig, panel: Any, day: dt.date, digest: str) -> tasks.ModelComparison:
    """Walk every model forward (one mapped task each) and pick the champion."""
    horizon = cfg.calibration.horizon_days
    eval_start = day - dt.timedelta(days=cfg.models.eval_days - 1)
    validation_start = eval_start - dt.timedelta(days=cfg.models.validation_days)
    window = None if cfg.models.window == "expanding" else cfg.models.rolling_days
    jobs = [
        tasks.WalkForwardJob(
            model=name,
            start=validation_start,
            end=day,
            refit_every=cfg.models.refit_every,
            horizon=horizon,
            window=window,
            panel_digest=digest,
        )
        for name in cfg.models.names
    ]
    walk = tasks.walk_forward_model.with_options(refresh_cache=not cfg.run.cache)
    results = walk.map(jobs, panel=unmapped(panel)).result()
    return tasks.compare_models(
        results, panel, horizon, eval_start, day, validation_start, cfg.models.seed
    )


def _update(cfg: XmarginConfig, as_of: dt.date | None) -> RunOutcome:
    log = get_run_logger()
    symbols = list(cfg.data.symbols)
    horizon = cfg.calibration.horizon_days
    if cfg.data.sync:
        tasks.sync_market_data(cfg.data_dir, symbols)
    data_digest = tasks.digest_market_data(cfg.data_dir, symbols)
    history = tasks.load_history(cfg.data_dir, symbols, cfg.data.history_start, as_of)
    advance(STEPS[1])
    panel = tasks.build_panel(history, symbols)
    day = tasks.resolve_as_of(panel, as_of)
    digest = tasks.panel_digest(panel)
    log.info("As-of %s: %d symbols, models %s", day, len(symbols), ", ".join(cfg.models.names))
    advance(STEPS[2])

    comparison = _evaluate(cfg, panel, day, digest)
    advance(STEPS[3])
    # MLflow logging and the champion's longer walk-forward are independent: run together.
    tracking = tasks.track_models.submit(comparison, panel, cfg, data_digest, digest)
    job = tasks.champion_job(comparison.champion, day, cfg, digest)
    walk = tasks.walk_forward_model.with_options(refresh_cache=not cfg.run.cache)
    champion = walk.submit(job, panel).result()
    forecast = champion.forecasts[(comparison.champion, horizon)]
    advance(STEPS[4])
    tracked = tracking.result()
    advance(STEPS[5])

    previous = tasks.load_previous_parameters(cfg.out_dir / tasks.PARAMS_STORE, day)
    params = tasks.calibrate(
        panel, forecast, comparison.champion, day, cfg, previous, data_digest, tracked
    )
    advance(STEPS[6])
    backtest = tasks.backtest_parameters(panel, forecast, comparison.champion, day, cfg)
    params = tasks.attach_backtest(params, backtest.summary)
    advance(STEPS[7])
    published = tasks.publish_parameters(params, cfg)
    advance(STEPS[8])
    report_html, charts = tasks.build_report(comparison, backtest, params, horizon)
    run_folder = tasks.write_run_folder(cfg, day, published, backtest, comparison, report_html)
    tasks.log_parameter_run(tracked, params, backtest.summary, charts, report_html, cfg)
    advance("done")
    return RunOutcome(
        as_of=day.isoformat(),
        run_folder=run_folder,
        params_folder=published.folder,
        champion=comparison.champion,
        files=dict(published.files),
        params=params,
        previous=previous,
    )


@flow(name="backtest", log_prints=True)
def backtest(
    config_file: str | None = None,
    as_of: str | None = None,
    symbols: list[str] | None = None,
    data_dir: str | None = None,
    out_dir: str | None = None,
) -> str:
    """Walk-forward parameter backtest of the champion over ``[backtest] days``.

    Writes ``backtest_summary.csv`` into ``out_dir/backtest/<as-of>/`` and returns its path.
    """
    cfg = _config(config_file, data_dir, symbols, out_dir)
    names = list(cfg.data.symbols)
    horizon = cfg.calibration.horizon_days
    day_in = None if as_of is None else dt.date.fromisoformat(as_of)
    history = tasks.load_history(cfg.data_dir, names, cfg.data.history_start, day_in)
    panel = tasks.build_panel(history, names)
    day = tasks.resolve_as_of(panel, day_in)
    digest = tasks.panel_digest(panel)
    comparison = _evaluate(cfg, panel, day, digest)
    job = tasks.champion_job(comparison.champion, day, cfg, digest)
    forecast = tasks.walk_forward_model(job, panel).forecasts[(comparison.champion, horizon)]
    result = tasks.backtest_parameters(panel, forecast, comparison.champion, day, cfg)
    folder = cfg.out_dir / "backtest" / day.isoformat()
    return str(tasks.write_backtest_summary(result, folder))


@flow(name="compute-margins", log_prints=True)
def compute_margins(
    params_path: str,
    book_dir: str,
    out_file: str,
    shards: int = 1,
    public_key: str | None = None,
) -> str:
    """A book of accounts and a verified parameter file → margin per account and liquidation
    plans, written to ``out_file`` (CSV or Parquet) and ``<stem>_liquidations``.

    With ``shards > 1`` the book is split by accounts and each shard is margined as its own
    task (on the Dask cluster when the flow runs with the Dask task runner); the shards are
    stacked in account order, so the result equals the single-process one.
    """
    key = None if public_key is None else Path(public_key)
    params = tasks.load_parameters(Path(params_path), key)
    book = tasks.load_book(Path(book_dir))
    methodology = tasks.methodology_from_parameters(params, book)
    result = margin_book(book, methodology, shards)
    plan = tasks.liquidation_plans(book, methodology, result, params)
    return str(tasks.write_margin_results(result, plan, Path(out_file)))


def margin_book(book: Book, methodology: Methodology, shards: int) -> MarginResult:
    """Margin ``book`` in ``shards`` account shards, one mapped task each (inside a flow)."""
    parts = tasks.margin_shard.map(
        tasks.shard_book(book, shards), methodology=unmapped(methodology)
    ).result()
    return tasks.stack_shards(parts)


def run_update_parameters(cfg: XmarginConfig, as_of: dt.date | None = None) -> RunOutcome:
    """Run ``update-parameters`` for a loaded configuration and print the summary table.

    The task runner follows ``[dask] address`` (Dask) or ``[run] max_workers`` (threads);
    ``[run] progress`` shows a progress bar over the steps.
    """
    from pipelines.summary import print_summary, step_progress

    runner = task_runner(cfg.dask.address, cfg.run.max_workers)
    configured = update_parameters_for_config.with_options(task_runner=runner)
    with step_progress(STEPS, enabled=cfg.run.progress):
        outcome: RunOutcome = configured(cfg, as_of)
    print_summary(outcome.params, outcome.previous)
    return outcome


@flow(name="update-parameters", log_prints=True, validate_parameters=False)
def update_parameters_for_config(cfg: XmarginConfig, as_of: dt.date | None = None) -> RunOutcome:
    """``update-parameters`` for a configuration object (used by the CLI and tests)."""
    return _update(cfg, as_of)


def run_compute_margins(
    cfg: XmarginConfig,
    params_path: Path,
    book_dir: Path,
    out_file: Path,
    public_key: Path | None = None,
) -> str:
    """Run ``compute-margins`` with the configured task runner (Dask shards when configured)."""
    runner = task_runner(cfg.dask.address, cfg.run.max_workers)
    shards = cfg.dask.shards if cfg.dask.address else 1
    configured = compute_margins.with_options(task_runner=runner)
    return configured(
        str(params_path),
        str(book_dir),
        str(out_file),
        shards,
        None if public_key is None else str(public_key),
    )
