"""The final summary table: one row per symbol with champion, σ̂, ranges, change and zone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console

from pipelines.summary import advance, step_progress, summary_table

ParamsFactory = Callable[..., Any]


def _render(table: object) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_rows_show_champion_ranges_change_and_zone(make_params: ParamsFactory) -> None:
    text = _render(summary_table(make_params(1.1), previous=make_params(1.0)))
    btc = next(line for line in text.splitlines() if "BTC" in line)
    assert "har" in btc and "2.50%" in btc
    assert "-6.60 / +7.26" in btc  # IM long / short
    assert "+10.0%" in btc  # IM change against the previous file
    assert "yellow" in btc
    eth = next(line for line in text.splitlines() if "ETH" in line)
    assert "n/a" in eth  # no backtest row for ETH


def test_first_file_says_new(make_params: ParamsFactory) -> None:
    text = _render(summary_table(make_params()))
    assert text.count("new") == 2


def test_progress_advances_without_a_terminal() -> None:
    console = Console(record=True, force_terminal=False)
    with step_progress(["a", "b"], console=console) as bar:
        advance("b")
        assert bar.tasks[0].completed == 1
        assert bar.tasks[0].description == "b"
    advance("ignored")  # no bar: nothing happens
