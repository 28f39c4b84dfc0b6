"""CLI commands of the forecasting area: ``xmargin evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "DOGE", "BNB")


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def evaluate(
    start: Annotated[str, typer.Option("--start", help="First forecast date (UTC, inclusive).")],
    end: Annotated[str, typer.Option("--end", help="Last forecast date (UTC, inclusive).")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Market data folder.")] = Path(
        "data"
    ),
    out: Annotated[Path, typer.Option("--out", help="Folder for forecast_metrics.csv.")] = Path(
        "out"
    ),
    symbols: Annotated[
        list[str] | None, typer.Option("--symbols", help="Symbols, e.g. BTC,ETH.")
    ] = None,
    models: Annotated[
        list[str] | None, typer.Option("--models", help="Models, e.g. garch,har.")
    ] = None,
    refit_every: Annotated[int, typer.Option("--refit-every", help="Days between refits.")] = 21,
    validation_days: Annotated[
        int, typer.Option("--validation-days", help="Days before --start that pick the champion.")
    ] = 365,
    jobs: Annotated[int, typer.Option("--jobs", help="Models evaluated in parallel.")] = 2,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log to MLflow.")] = True,
    write_docs: Annotated[
        Path | None,
        typer.Option("--write-docs", help="Update the results section of this Markdown file."),
    ] = None,
) -> None:
    """Walk-forward evaluation of the volatility forecasters; prints the champion last."""
    from models.runner import run_evaluation

    run_evaluation(
        data_dir=data_dir,
        start=start,
        end=end,
        out=out,
        symbols=_split(symbols) or list(DEFAULT_SYMBOLS),
        models=_split(models),
        refit_every=refit_every,
        validation_days=validation_days,
        n_jobs=jobs,
        log_mlflow=mlflow,
        write_docs=write_docs,
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("evaluate")(evaluate)
