"""Flat MLflow metrics of backtest rows (``margin.backtest.run_metrics``)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from margin.backtest import ROW_METRICS, SUMMARY_COLUMNS, run_metrics


def _row(model: str, symbol: str, level: str, side: str, **values: object) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(SUMMARY_COLUMNS, 0.5)
    row.update(model=model, symbol=symbol, level=level, side=side, zone="green")
    row.update(values)
    return row


@pytest.fixture
def summary() -> pd.DataFrame:
    rows = [
        _row("m", "BTC", "IM", "long", n=100, breaches=1, avg_margin=0.06, kupiec_p=0.9),
        _row("m", "BTC", "IM", "short", n=100, breaches=3, avg_margin=0.10, kupiec_p=0.01),
        _row("m", "ETH", "IM", "long", n=50, breaches=0, avg_margin=0.08, zone="yellow"),
        _row("m", "ETH", "MM", "long", n=50, breaches=2, avg_margin=0.05, kupiec_p=None),
        _row("static", "BTC", "IM", "long", n=100, breaches=4, avg_margin=0.12),
        _row("static", "BTC", "IM", "short", n=100, breaches=2, avg_margin=0.10),
        _row("static", "ETH", "IM", "long", n=50, breaches=2, avg_margin=0.16),
        _row("static", "ETH", "MM", "long", n=50, breaches=2, avg_margin=0.10),
    ]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def test_one_name_per_symbol_level_side(summary: pd.DataFrame) -> None:
    metrics = run_metrics(summary, "m")
    assert metrics["breaches_BTC_IM_short"] == 3
    assert metrics["avg_margin_ETH_IM_long"] == pytest.approx(0.08)
    assert metrics["zone_ETH_IM_long"] == 1.0 and metrics["zone_BTC_IM_long"] == 0.0
    assert metrics["avg_margin_vs_static_BTC_IM_long"] == pytest.approx(0.5)
    assert metrics["avg_margin_vs_static_ETH_MM_long"] == pytest.approx(0.5)
    # a missing p-value is left out rather than logged as NaN
    assert "kupiec_p_ETH_MM_long" not in metrics
    assert all(math.isfinite(v) for v in metrics.values())
    per_row = {k for k in metrics if "_ALL_" not in k}
    assert len(per_row) == 4 * (len(ROW_METRICS) + 2) - 1


def test_pooled_figures_per_level(summary: pd.DataFrame) -> None:
    metrics = run_metrics(summary, "m", test_level=0.05)
    assert metrics["n_ALL_IM"] == 250 and metrics["breaches_ALL_IM"] == 4
    assert metrics["breach_rate_ALL_IM"] == pytest.approx(4 / 250)  # pooled, not averaged
    assert metrics["avg_margin_ALL_IM"] == pytest.approx(0.08)
    assert metrics["avg_margin_vs_static_ALL_IM"] == pytest.approx(0.08 / (0.38 / 3))
    assert metrics["kupiec_pass_ALL_IM"] == 2  # 0.9 and 0.5 pass, 0.01 fails
    assert metrics["breach_rate_ALL_MM"] == pytest.approx(2 / 50)


def test_prefix_and_unknown_model(summary: pd.DataFrame) -> None:
    metrics = run_metrics(summary, "m", prefix="val_")
    assert metrics and all(k.startswith("val_") for k in metrics)
    assert run_metrics(summary, "nobody") == {}
    static = run_metrics(summary, "static")
    assert static["avg_margin_vs_static_ALL_IM"] == pytest.approx(1.0)
