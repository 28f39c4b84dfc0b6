"""The ``xmargin evaluate`` workflow: load → panel → walk forward → files, MLflow, docs."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pandas as pd

from models.errors import ModelInputError
from models.evaluation import EvaluationResult, evaluate
from models.registry import MODEL_NAMES
from models.report import atomic_write_text, results_markdown, write_results_section


def load_panel(data_dir: Path, symbols: list[str], end: pd.Timestamp) -> pd.DataFrame:
    """Daily panel of ``symbols`` from each symbol's first day to ``end`` (+7 days of targets)."""
    from features.history import load_market_history
    from features.matrix import build_daily_panel

    last = end + pd.Timedelta(days=8)
    history = load_market_history(data_dir, symbols=symbols, end=last)
    return build_daily_panel(history, symbols)


def run_evaluation(
    data_dir: Path,
    start: str,
    end: str,
    out: Path,
    symbols: list[str],
    models: list[str] | None = None,
    refit_every: int = 21,
    validation_days: int = 365,
    n_jobs: int = 2,
    log_mlflow: bool = True,
    write_docs: Path | None = None,
) -> EvaluationResult:
    """Run the evaluation and write ``out/forecast_metrics.csv``; print the champion last."""
    from rich.console import Console

    console = Console()
    names = list(models or MODEL_NAMES)
    unknown = [m for m in names if m not in MODEL_NAMES]
    if unknown:
        raise ModelInputError(
            f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODEL_NAMES)}."
        )
    try:
        start_ts, end_ts = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    except ValueError as exc:
        raise ModelInputError(f"--start/--end must be dates like 2022-01-01 ({exc}).") from None
    t0 = time.perf_counter()
    panel = load_panel(Path(data_dir), symbols, end_ts)
    console.print(f"panel: {len(panel)} rows, {len(symbols)} symbols")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate(
            panel,
            start_ts,
            end_ts,
            names,
            validation_days=validation_days,
            refit_every=refit_every,
            n_jobs=n_jobs,
        )
    fallbacks = {m: len(f) for m, f in result.walk.fallbacks.items() if f}
    if fallbacks:
        console.print(f"fallbacks (failed fits): {fallbacks}")
        for items in result.walk.fallbacks.values():
            for fb in items:
                console.print(
                    f"  {fb.model} {fb.symbol} {fb.date:%Y-%m-%d}: {fb.reason}; {fb.action}",
                    markup=False,
                    highlight=False,
                )
    if caught:
        console.print(f"{len(caught)} warning(s) during the walk-forward")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "forecast_metrics.csv", result.metrics.to_csv(index=False))
    atomic_write_text(out / "forecast_details.csv", result.details.to_csv(index=False))
    console.print(f"wrote {out / 'forecast_metrics.csv'}")
    if log_mlflow:
        from models.tracking import log_evaluation, tracking_uri

        info = log_evaluation(result, panel, n_jobs=n_jobs)
        console.print(f"MLflow: parent run {info.parent_run_id} in {tracking_uri()}")
    if write_docs is not None:
        write_results_section(Path(write_docs), results_markdown(result))
        console.print(f"updated {write_docs}")
    pooled = result.metrics[result.metrics["symbol"] == "ALL"]
    console.print(pooled.to_string(index=False))
    console.print(f"elapsed {time.perf_counter() - t0:.1f} s")
    parts = [f"h={h}: {s.champion}" for h, s in sorted(result.selections.items())]
    print(
        f"champion: {result.selections[min(result.selections)].champion} "
        f"({'; '.join(parts)}; chosen on {result.validation_start.date()}.."
        f"{(result.start - pd.Timedelta(days=1)).date()}, before --start)",
        flush=True,
    )
    return result
