"""CLI commands: ``xmargin data sync`` and ``xmargin data check``."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from features.summary import DataCheck

data_app = typer.Typer(help="Market history: fill and check the data folder.", no_args_is_help=True)


class Source(StrEnum):
    """Where ``data sync`` gets market history from."""

    mirror = "mirror"
    ccxt = "ccxt"


DataDirOption = Annotated[
    Path, typer.Option("--data-dir", help="Data folder to fill or check.", show_default=True)
]


def _symbols(value: list[str] | None) -> list[str] | None:
    """Accept ``--symbols BTC ETH``, ``--symbols BTC,ETH`` or repeated options."""
    if not value:
        return None
    return [s.upper() for item in value for s in item.replace(",", " ").split() if s]


VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log per-file counts (rows, gaps, drops, flags).")
]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@data_app.command("sync")
def sync(
    data_dir: DataDirOption = Path("data"),
    from_dir: Annotated[
        Path | None,
        typer.Option("--from-dir", help="Mirror folder (default: ../shared/data if it exists)."),
    ] = None,
    source: Annotated[
        Source, typer.Option("--source", help="mirror: copy a local folder; ccxt: download.")
    ] = Source.mirror,
    symbols: Annotated[
        list[str] | None, typer.Option("--symbols", help="Symbols, e.g. BTC,ETH (default: all).")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Fill the data folder from a local mirror or, with --source ccxt, from the exchanges."""
    _logging(verbose)
    chosen = _symbols(symbols)
    if source is Source.ccxt:
        import ccxt

        from features.ccxt_source import download_all

        try:
            report = download_all(data_dir, chosen)
        except ccxt.NetworkError as exc:
            typer.echo(f"error: exchange unreachable after retries ({exc}); data kept", err=True)
            raise typer.Exit(1) from None
        for name, added in report.items():
            typer.echo(f"{name}: {added} new rows")
        typer.echo(f"synced {len(report)} series into {data_dir} from the exchanges (ccxt)")
        return
    from features.errors import MissingDataError
    from features.sync import default_mirror, sync_from_mirror

    mirror = from_dir if from_dir is not None else default_mirror()
    if mirror is None:
        raise MissingDataError(
            "no mirror folder: ../shared/data does not exist here; pass --from-dir or "
            "use --source ccxt"
        )
    result = sync_from_mirror(mirror, data_dir, chosen)
    typer.echo(
        f"synced {result.total} files into {data_dir} from {mirror}: "
        f"{len(result.copied)} copied, {len(result.unchanged)} already up to date"
    )


SHORT = {"funding": "fund", "options": "opt", "reference": "ref"}


def _render(check: DataCheck, data_dir: Path) -> None:
    import pandas as pd
    from rich import box
    from rich.console import Console
    from rich.table import Table

    files = check.files
    console = Console()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), expand=False)
    for header, justify in (
        ("series", "left"),
        ("rows", "right"),
        ("first", "left"),
        ("last", "left"),
        ("gaps", "right"),
        ("drop", "right"),
        ("flags", "right"),
    ):
        table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]

    def num(row: pd.Series, key: str) -> int | None:
        value = row.get(key)
        return None if value is None or pd.isna(value) else int(value)

    def stamp(value: object) -> str:
        return "" if value is None or pd.isna(value) else f"{pd.Timestamp(value):%Y-%m-%d}"

    for _, row in files.iterrows():
        missing = num(row, "missing_bars")
        gaps = (
            "" if missing is None else f"{missing}/{num(row, 'gap_runs')}/{num(row, 'longest_gap')}"
        )
        flags = (
            ""
            if num(row, "zero_volume") is None
            else f"{num(row, 'zero_volume')}/{num(row, 'flat_bars')}/{num(row, 'large_moves')}"
        )
        dropped = num(row, "dropped_launch_day")
        table.add_row(
            f"{SHORT.get(str(row['kind']), row['kind'])} {row['symbol']}",
            f"{num(row, 'rows'):,}",
            stamp(row["first"]),
            stamp(row["last"]),
            gaps,
            "" if dropped is None else str(dropped),
            flags,
        )
    console.print(
        f"[bold]{len(files)} files valid[/] in {data_dir} · symbols: {', '.join(check.symbols)}"
    )
    console.print(table)
    console.print(
        "dates UTC. gaps: missing bars/gap runs/longest run, kept as gaps (never filled). "
        "drop: bars of a partial first (listing/launch) day, dropped on load. flags, kept: "
        "zero-volume/flat (O=H=L=C)/|hourly log return| > 0.15 bars. Policy: docs/data.md",
        style="dim",
    )
    for name in check.ignored:
        console.print(f"[yellow]ignored[/] {name}: file name matches no known series")


@data_app.command("check")
def check(data_dir: DataDirOption = Path("data"), verbose: VerboseOption = False) -> None:
    """Validate every file in the data folder and print a one-screen summary."""
    _logging(verbose)
    from features.summary import check_data_dir

    _render(check_data_dir(data_dir), data_dir)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.add_typer(data_app, name="data")
