"""What a run prints: rich progress for long steps and the final per-symbol summary table."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    from margin.parameters import BacktestRow, ParameterSet

_ZONE_STYLE = {"green": "green", "yellow": "yellow", "red": "bold red"}


def _pct(value: float) -> str:
    return f"{100.0 * value:.2f}%"


def _range(long: float, short: float) -> str:
    """Down-move / up-move in percent of price, e.g. ``-5.45 / +6.58``."""
    return f"-{100.0 * long:.2f} / +{100.0 * short:.2f}"


def _im_change(params: ParameterSet, symbol: str, previous: ParameterSet | None) -> str:
    current = params.underlyings[symbol].scan_im
    if previous is not None and symbol in previous.underlyings:
        old = previous.underlyings[symbol].scan_im
        change = max(current.long, current.short) / max(old.long, old.short) - 1.0
        return f"{100.0 * change:+.1f}%"
    for row in params.changes:
        if row.underlying == symbol and row.field in ("scan_im.long", "scan_im"):
            return f"{100.0 * row.relative_change:+.1f}%"
    return "new"


def _zone(rows: tuple[BacktestRow, ...], symbol: str, model: str) -> str:
    """Worst IM traffic-light zone of the champion (or its model name) across sides."""
    order = {"green": 0, "yellow": 1, "red": 2}
    zones = [
        r.zone
        for r in rows
        if r.symbol == symbol and r.level == "IM" and r.model in ("champion", model) and r.zone
    ]
    if not zones:
        return "n/a"
    worst = max(zones, key=lambda z: order[z])
    return f"[{_ZONE_STYLE[worst]}]{worst}[/]"


def summary_table(params: ParameterSet, previous: ParameterSet | None = None) -> Table:
    """Per symbol: champion, σ̂ (h-day, decimal shown as %), IM and MM scan ranges, IM change
    against the previous file, and the IM backtest zone."""
    table = Table(
        title=f"xmargin parameters as of {params.as_of} "
        f"(horizon {params.horizon_days} d, IM {params.im_confidence:.1%}, "
        f"MM {params.mm_confidence:.1%})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("symbol", "champion", "σ̂", "IM scan %", "MM scan %", "IM change", "zone"):
        left = column in ("symbol", "champion")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for symbol in sorted(params.underlyings):
        p = params.underlyings[symbol]
        model = p.model + (f" ({p.fallback.source})" if p.fallback.used else "")
        table.add_row(
            symbol,
            model,
            _pct(p.sigma),
            _range(p.scan_im.long, p.scan_im.short),
            _range(p.scan_mm.long, p.scan_mm.short),
            _im_change(params, symbol, previous),
            _zone(params.backtest_summary, symbol, p.model),
        )
    return table


def print_summary(
    params: ParameterSet,
    previous: ParameterSet | None = None,
    console: Console | None = None,
) -> None:
    """Print :func:`summary_table` and the bounds that bit."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and CI: rich would cut the table at 80 columns
            console = Console(width=120)
    console.print(summary_table(params, previous))
    for symbol in sorted(params.underlyings):
        for event in params.underlyings[symbol].apc.bounds_bit:
            console.print(
                f"  {symbol}: {event.rule} bit on {event.field}: "
                f"{event.raw:.4g} → {event.bounded:.4g}"
            )


_ACTIVE: list[tuple[Progress, TaskID]] = []


@contextmanager
def step_progress(
    steps: Sequence[str], enabled: bool = True, console: Console | None = None
) -> Iterator[Progress]:
    """A rich progress bar over the named steps of a flow; :func:`advance` moves it.

    The bar is transient (it disappears when the run ends) and is off when ``enabled`` is
    false or the output is not a terminal.
    """
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )
    with bar:
        task_id = bar.add_task(steps[0] if steps else "", total=len(steps))
        _ACTIVE.append((bar, task_id))
        try:
            yield bar
        finally:
            _ACTIVE.remove((bar, task_id))


def advance(next_step: str) -> None:
    """Mark the current step done and show ``next_step`` (no-op without a progress bar)."""
    for bar, task_id in _ACTIVE[-1:]:
        bar.update(task_id, advance=1, description=next_step)
