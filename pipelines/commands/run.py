"""CLI commands: run the pipeline, margin a book, serve the schedule, open the MLflow UI."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML configuration (default: ./xmargin.toml or built-ins)."),
]


def _symbols(value: list[str] | None) -> list[str] | None:
    """Accept ``--symbols BTC ETH``, ``--symbols BTC,ETH`` or repeated options."""
    if not value:
        return None
    return [s for item in value for s in item.replace(",", " ").split() if s]


def _as_of(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--as-of: not a date in YYYY-MM-DD form (got {value!r})") from None


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.expanduser().resolve()


def run(
    config: ConfigOption = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Market history.")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="As-of date YYYY-MM-DD (default: last day).")
    ] = None,
    symbols: Annotated[
        list[str] | None, typer.Option("--symbols", help="Symbols, e.g. BTC,ETH.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output root (default: out).")] = None,
) -> None:
    """Run update_parameters: forecasts → champion → parameters → backtest → files → report."""
    from pipelines.config import load_config
    from pipelines.settings import configure_environment

    cfg = load_config(config).with_overrides(
        data={"dir": _absolute(data_dir), "symbols": _symbols(symbols)},
        params={"out_dir": _absolute(out)},
    )
    day = _as_of(as_of)
    configure_environment(cfg.prefect_home, cfg.mlflow_tracking_uri)

    from pipelines.flows import run_update_parameters

    run_update_parameters(cfg, as_of=day)


def margin(
    params: Annotated[Path, typer.Option("--params", help="Parameter file or folder.")],
    book: Annotated[Path, typer.Option("--book", help="Book folder (instruments, positions…).")],
    out: Annotated[Path, typer.Option("--out", help="Output file (.csv or .parquet).")],
    config: ConfigOption = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Verify the signature against this key.")
    ] = None,
) -> None:
    """Margin a book of accounts with a verified parameter file (compute_margins flow)."""
    from pipelines.config import load_config
    from pipelines.settings import configure_environment

    cfg = load_config(config)
    configure_environment(cfg.prefect_home, cfg.mlflow_tracking_uri)

    from pipelines.flows import run_compute_margins

    run_compute_margins(cfg, params.resolve(), book.resolve(), out.resolve(), public_key)


def serve(
    config: ConfigOption = None,
    cron: Annotated[
        str, typer.Option("--cron", help="Cron schedule (UTC); default daily at 00:30.")
    ] = "30 0 * * *",
    port: Annotated[int, typer.Option("--port", help="Local Prefect server port.")] = 4200,
) -> None:
    """Serve the scheduled update_parameters deployment on a local Prefect server."""
    from pipelines.config import load_config
    from pipelines.settings import configure_environment

    cfg = load_config(config)
    configure_environment(cfg.prefect_home, cfg.mlflow_tracking_uri)

    from pipelines.serving import serve_deployment

    serve_deployment(cfg, cron=cron, port=port)


def ui(
    config: ConfigOption = None,
    port: Annotated[int, typer.Option("--port", help="Port of the MLflow UI.")] = 5000,
) -> None:
    """Open the MLflow UI on the local store (one worker, no job runner: starts in seconds)."""
    from pipelines.config import load_config

    cfg = load_config(config)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", cfg.mlflow_tracking_uri,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    typer.echo(
        f"MLflow UI on http://127.0.0.1:{port} (store {cfg.mlflow_tracking_uri}); Ctrl-C stops"
    )
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(command, env=env, cwd=cfg.base_dir, check=False)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("run")(run)
    app.command("margin")(margin)
    app.command("serve")(serve)
    app.command("ui")(ui)
