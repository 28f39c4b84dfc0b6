"""The final summary table: one row per symbol with champion, σ̂, ranges, change and zone."""

from __future__ import annotations

import datetime as dt

from rich.console import Console

from pipelines.summary import advance, step_progress, summary_table


def _params(scale: float = 1.0, zone: str = "yellow"):  # type: ignore[no-untyped-def]
    from margin.parameters import (
        ApcState,
        BacktestRow,
        Haircut,
        ParameterSet,
        PerpMargin,
        Provenance,
        RiskParameters,
        ScanRange,
        TailMove,
        VolShock,
    )

    day = dt.date(2024, 6, 30)
    under = {}
    for symbol, im in (("BTC", 0.06), ("ETH", 0.08)):
        under[symbol] = RiskParameters(
            underlying=symbol,
            as_of=day,
            horizon_days=1,
            im_confidence=0.99,
            mm_confidence=0.975,
            sigma=0.025,
            model="har",
            scan_im=ScanRange(long=im * scale, short=im * scale * 1.1),
            scan_mm=ScanRange(long=im * scale * 0.8, short=im * scale * 0.9),
            vol_shock=VolShock(up=0.3, down=0.2),
            tails=(TailMove(move=-0.5, weight=0.2),),
            perp=PerpMargin(imf=0.07, mmf=0.05, size_addon=1e-5),
            haircut=Haircut(im=0.1, mm=0.08, horizon_days=2),
            apc=ApcState(),
        )
    row = {
        "model": "champion", "symbol": "BTC", "level": "IM", "side": "long", "n": 90,
        "breaches": 3, "breach_rate": 3 / 90, "expected_rate": 0.01, "kupiec_p": 0.04,
        "christoffersen_ind_p": 0.5, "christoffersen_cc_p": 0.1, "zone": zone,
        "avg_margin": 0.06, "peak_to_trough": 1.2, "max_increase_1d": 0.1,
        "max_increase_5d": 0.2, "max_increase_30d": 0.3,
    }  # fmt: skip
    return ParameterSet(
        as_of=day,
        effective_from=dt.datetime(2024, 7, 1, tzinfo=dt.UTC),
        horizon_days=1,
        im_confidence=0.99,
        mm_confidence=0.975,
        underlyings=under,
        backtest_summary=(BacktestRow(**row),),
        provenance=Provenance(model="har", data_digest="abc", code_version="test"),
    )


def _render(table: object) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_rows_show_champion_ranges_change_and_zone() -> None:
    text = _render(summary_table(_params(1.1), previous=_params(1.0)))
    btc = next(line for line in text.splitlines() if "BTC" in line)
    assert "har" in btc and "2.50%" in btc
    assert "-6.60% / +7.26%" in btc  # IM long / short
    assert "+10.0%" in btc  # IM change against the previous file
    assert "yellow" in btc
    eth = next(line for line in text.splitlines() if "ETH" in line)
    assert "n/a" in eth  # no backtest row for ETH


def test_first_file_says_new() -> None:
    text = _render(summary_table(_params()))
    assert text.count("new") == 2


def test_progress_advances_without_a_terminal() -> None:
    console = Console(record=True, force_terminal=False)
    with step_progress(["a", "b"], console=console) as bar:
        advance("b")
        assert bar.tasks[0].completed == 1
        assert bar.tasks[0].description == "b"
    advance("ignored")  # no bar: nothing happens
