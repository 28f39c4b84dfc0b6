"""Walk-forward parameter backtest, procyclicality metrics and champion selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from margin.apc import ApcConfig
from margin.backtest import (
    SUMMARY_COLUMNS,
    BacktestConfig,
    breaches_of,
    parameter_backtest,
    procyclicality,
    select_champion,
)

START, END = "2021-01-01", "2022-06-30"


def garch_panel(symbols: tuple[str, ...] = ("AAA", "BBB"), n: int = 1700):  # type: ignore[no-untyped-def]
    """Synthetic GARCH(1,1)-t prices with their true one-day variance (seeded)."""
    frames, true, flat = [], [], []
    omega, alpha, beta = 2e-5, 0.1, 0.85
    for i, symbol in enumerate(symbols):
        rng = np.random.default_rng(i)
        h, r = np.empty(n), np.empty(n)
        h[0] = omega / (1 - alpha - beta)
        for t in range(n):
            if t:
                h[t] = omega + alpha * r[t - 1] ** 2 + beta * h[t - 1]
            r[t] = np.sqrt(h[t]) * rng.standard_t(5) / np.sqrt(5 / 3)
        dates = pd.date_range("2018-01-01", periods=n, freq="D", tz="UTC")
        idx = pd.MultiIndex.from_arrays([[symbol] * n, dates], names=["symbol", "date"])
        frames.append(pd.DataFrame({"close": 100 * np.exp(np.cumsum(r))}, index=idx))
        true.append(pd.Series(np.append(h[1:], np.nan), index=idx))
        flat.append(pd.Series(np.full(n, omega / (1 - alpha - beta)), index=idx))
    return pd.concat(frames), {"true": pd.concat(true), "flat": pd.concat(flat)}


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    prices, forecasts = garch_panel()
    return parameter_backtest(prices, forecasts, START, END)


def test_summary_columns_and_rows(result) -> None:  # type: ignore[no-untyped-def]
    assert tuple(result.summary.columns) == SUMMARY_COLUMNS
    assert set(result.summary["model"]) == {"true", "flat", "static", "champion"}
    assert len(result.summary) == 4 * 2 * 4  # models x symbols x (level, side)
    n_days = len(pd.date_range(START, END, freq="D"))
    assert (result.summary["n"] == n_days).all()
    assert sorted(set(result.summary["expected_rate"])) == pytest.approx([0.01, 0.025])


def test_true_variance_passes_coverage(result) -> None:  # type: ignore[no-untyped-def]
    rows = result.summary[(result.summary["model"] == "true") & (result.summary["level"] == "IM")]
    assert (rows["kupiec_p"] > 0.05).all()
    assert (rows["zone"] != "red").all()


def test_static_baseline_is_constant(result) -> None:  # type: ignore[no-untyped-def]
    rows = result.summary[result.summary["model"] == "static"]
    assert (rows["peak_to_trough"] == 1.0).all()
    assert (rows["max_increase_5d"] == 0.0).all()


def test_champion_rows_repeat_the_chosen_model(result) -> None:  # type: ignore[no-untyped-def]
    assert result.champion == "true"
    s = result.summary
    chosen = s[s["model"] == result.champion].drop(columns="model").reset_index(drop=True)
    champ = s[s["model"] == "champion"].drop(columns="model").reset_index(drop=True)
    pd.testing.assert_frame_equal(chosen, champ)


def test_champion_never_sees_the_evaluation_window() -> None:
    prices, forecasts = garch_panel()
    base = parameter_backtest(prices, forecasts, START, END)
    # Wreck everything inside the evaluation window: selection must not change.
    dates = prices.index.get_level_values("date")
    after = dates >= pd.Timestamp(START, tz="UTC")
    shocked = prices.copy()
    shocked.loc[after, "close"] = shocked.loc[after, "close"] * np.exp(
        np.random.default_rng(9).normal(0, 0.3, after.sum())
    )
    other = parameter_backtest(shocked, forecasts, START, END)
    assert other.champion == base.champion
    pd.testing.assert_frame_equal(other.validation, base.validation)


def test_stress_windows(result) -> None:  # type: ignore[no-untyped-def]
    stress = result.stress
    assert tuple(stress.columns) == ("window", *SUMMARY_COLUMNS)
    assert set(stress["window"]) == {"2020-03", "2021-05", "2022-06"}  # 2022-11 is past the data
    march = stress[(stress["window"] == "2020-03") & (stress["model"] == "true")]
    assert (march["n"] == 31).all()


def test_apc_reduces_procyclicality() -> None:
    prices, forecasts = garch_panel(("AAA",))
    only = {"true": forecasts["true"]}
    off = parameter_backtest(prices, only, START, END).summary
    on = parameter_backtest(
        prices, only, START, END, BacktestConfig(apc=ApcConfig.all_on())
    ).summary
    key = ["model", "symbol", "level", "side"]
    a = off[off["model"] == "true"].set_index(key)
    b = on[on["model"] == "true"].set_index(key)
    assert (b["avg_margin"] >= a["avg_margin"]).all()
    assert (b["peak_to_trough"] < a["peak_to_trough"]).all()
    assert (b["breaches"] <= a["breaches"]).all()


def test_procyclicality_hand_case() -> None:
    m = pd.Series([0.10, 0.12, 0.09, 0.18, 0.18, 0.18, 0.18, 0.09])
    out = procyclicality(m)
    assert out["peak_to_trough"] == pytest.approx(2.0)
    assert out["max_increase_1d"] == pytest.approx(1.0)  # 0.09 -> 0.18
    assert out["max_increase_5d"] == pytest.approx(0.8)  # 0.10 (t=0) -> 0.18 (t=5)
    assert np.isnan(out["max_increase_30d"])


def test_breaches_by_side() -> None:
    moves = pd.Series(np.log([0.85, 1.0, 1.12, 0.95]))
    margin = pd.Series([0.10, 0.10, 0.10, np.nan])
    assert breaches_of(moves, margin, "long").tolist() == [True, False, False]
    assert breaches_of(moves, margin, "short").tolist() == [False, False, True]


def test_champion_rule_prefers_passing_then_cheaper() -> None:
    def rows(model: str, p: float, avg: float) -> list[dict[str, object]]:
        return [
            {
                "model": model,
                "level": "IM",
                "side": side,
                "kupiec_p": p,
                "christoffersen_ind_p": 0.5,
                "christoffersen_cc_p": 0.5,
                "avg_margin": avg,
                "max_increase_5d": 0.1,
                "peak_to_trough": 2.0,
            }
            for side in ("long", "short")
        ]

    frame = pd.DataFrame(
        rows("cheap_fails", 0.01, 0.05) + rows("ok", 0.3, 0.08) + rows("ok2", 0.3, 0.07)
    )
    assert select_champion(frame)[0] == "ok2"


def test_backtest_metrics_names(result) -> None:  # type: ignore[no-untyped-def]
    from margin.backtest import backtest_metrics

    metrics = backtest_metrics(result.summary)
    assert len(metrics) == 2 * 4 * 6
    row = result.summary[
        (result.summary["model"] == "champion")
        & (result.summary["symbol"] == "AAA")
        & (result.summary["level"] == "IM")
        & (result.summary["side"] == "long")
    ].iloc[0]
    assert metrics["bt_kupiec_p_AAA_IM_long"] == row["kupiec_p"]


def test_margin_vs_static_split(result) -> None:  # type: ignore[no-untyped-def]
    from margin.backtest import margin_vs_static_split

    _, forecasts = garch_panel()
    split = margin_vs_static_split(result, forecasts["true"]).set_index(["symbol", "side"])
    assert list(split.index) == [(s, d) for s in ("AAA", "BBB") for d in ("long", "short")]
    im = result.summary[result.summary["level"] == "IM"].set_index(["model", "symbol", "side"])
    for (symbol, side), row in split.iterrows():
        # the same ratio the summary reports, from the same margin path
        ratio = (
            im.loc[("true", symbol, side), "avg_margin"]
            / im.loc[("static", symbol, side), "avg_margin"]
        )
        assert row["margin_vs_static"] == pytest.approx(ratio, rel=1e-12)
        # the static quantile in sd units, computed independently from the moves
        moves = result.moves[symbol]
        known = moves[moves.index < pd.Timestamp(START, tz="UTC") - pd.Timedelta(days=1)].dropna()
        q = np.quantile(known, 0.01 if side == "long" else 0.99)
        assert row["static_quantile"] == pytest.approx(abs(q) / known.std(), rel=1e-12)
        # small moves: the two parts multiply to the ratio
        assert row["vol_ratio"] * row["shape_ratio"] == pytest.approx(ratio, rel=0.05)
    assert (split["shape_ratio"] == split["model_quantile"] / split["static_quantile"]).all()
