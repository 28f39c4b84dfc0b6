"""Portfolio backtest through the engine: hand-checked P&L, statistics, skew, no look-ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from margin.backtest import BacktestConfig, dynamic_margins, kupiec_pof
from margin.calibration import forward_log_moves
from margin.portfolio_backtest import (
    PORTFOLIO_COLUMNS,
    PORTFOLIOS,
    PortfolioBacktestConfig,
    PortfolioBacktestResult,
    SkewShape,
    daily_market,
    load_snapshot_skew,
    portfolio_backtest,
    realized_pnl,
    skew_from_snapshot,
)

START, END = "2023-02-01", "2023-03-10"
SNAPSHOT = "deribit_options_snapshots/ETH_options_2024-01-08T1119Z.csv.gz"
CONFIG = BacktestConfig(min_residuals=120)


def _scans(market: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Walk-forward scan ranges from an EWMA variance forecast (causal) of spot closes."""
    out = {}
    for s in ("BTC", "ETH"):
        close = market[f"{s}_spot"]
        ret = np.log(close).diff()
        variance = (ret.fillna(0.0) ** 2).ewm(alpha=0.06, adjust=False).mean().clip(lower=1e-8)
        out[s] = dynamic_margins(forward_log_moves(close, 1), variance, CONFIG)
    return out


@pytest.fixture(scope="module")
def market(shared_data_dir: Path) -> pd.DataFrame:
    from features.history import load_market_history

    history = load_market_history(shared_data_dir, ["BTC", "ETH"], start="2022-06-01", end=END)
    return daily_market(history, ("BTC", "ETH"))


@pytest.fixture(scope="module")
def skew(shared_data_dir: Path) -> SkewShape:
    return load_snapshot_skew(shared_data_dir / SNAPSHOT)


@pytest.fixture(scope="module")
def result(market: pd.DataFrame, skew: SkewShape) -> PortfolioBacktestResult:
    return portfolio_backtest(market, _scans(market), START, END, skew)


def _daily(result: PortfolioBacktestResult, portfolio: str) -> pd.DataFrame:
    return result.daily[result.daily["portfolio"] == portfolio].set_index("date")


def test_summary_shape_and_counts(result: PortfolioBacktestResult) -> None:
    s = result.summary
    assert tuple(s.columns) == PORTFOLIO_COLUMNS
    assert list(s["portfolio"]) == [p for p in PORTFOLIOS for _ in ("IM", "MM")]
    for row in s.itertuples(index=False):
        d = _daily(result, row.portfolio)
        hits = (-d["pnl"] > d[row.level.lower()]).to_numpy()
        assert row.n == len(d) >= 30
        assert row.breaches == hits.sum()
        assert row.kupiec_p == pytest.approx(kupiec_pof(hits, row.expected_rate).pvalue)
    im = result.daily["im"].to_numpy()
    assert np.isfinite(im).all() and (im > 0).all()
    assert (result.daily["mm"] <= result.daily["im"]).all()


def test_basis_pnl_is_minus_the_basis_change(
    result: PortfolioBacktestResult, market: pd.DataFrame
) -> None:
    d = _daily(result, "basis")
    basis = market["BTC_perp"] - market["BTC_spot"]
    change = (basis.shift(-1) - basis).reindex(d.index)
    np.testing.assert_allclose(d["pnl"], -change, rtol=0, atol=1e-9)
    # long spot / short perp is hedged: IM is far below the unhedged perp's scan charge
    assert (d["im"] < 0.02 * market["BTC_spot"].reindex(d.index)).all()


def _black(f: np.ndarray, k: np.ndarray, t: float, vol: np.ndarray, call: bool) -> np.ndarray:
    sd = vol * np.sqrt(t)
    d1 = np.log(f / k) / sd + sd / 2
    d2 = d1 - sd
    if call:
        return np.asarray(f * norm.cdf(d1) - k * norm.cdf(d2))
    return np.asarray(k * norm.cdf(-d2) - f * norm.cdf(-d1))


def test_straddle_pnl_is_the_revaluation_difference(
    result: PortfolioBacktestResult, market: pd.DataFrame, skew: SkewShape
) -> None:
    d = _daily(result, "long_straddle")
    now = market.reindex(d.index)
    later = market.shift(-1).reindex(d.index)
    s0, s1 = now["ETH_spot"].to_numpy(), later["ETH_spot"].to_numpy()
    k = s0  # at the money at t
    vol0 = now["ETH_dvol"].to_numpy() * skew(np.zeros_like(s0))
    vol1 = later["ETH_dvol"].to_numpy() * skew(np.log(k / s1))
    t0, t1 = 30 / 365, 29 / 365
    v0 = _black(s0, k, t0, vol0, True) + _black(s0, k, t0, vol0, False)
    v1 = _black(s1, k, t1, vol1, True) + _black(s1, k, t1, vol1, False)
    np.testing.assert_allclose(d["pnl"], v1 - v0, rtol=1e-9, atol=1e-9)
    # a long straddle's loss is bounded by its premium
    assert (-d["pnl"] < v0).all()


def test_strangle_pays_the_naked_short_add_on(
    result: PortfolioBacktestResult, market: pd.DataFrame
) -> None:
    from margin.methodology import AddOnConfig

    d = _daily(result, "short_strangle")
    spot = market["ETH_spot"].reindex(d.index)
    # two naked short contracts: at least their contingency on top of the scenario part
    assert (d["im"] >= 2 * AddOnConfig().short_option_im * spot).all()
    pair = _daily(result, "pair")
    btc = market["BTC_spot"].reindex(pair.index)
    np.testing.assert_allclose(pair["notional"], 2 * btc)  # dollar neutral legs


def test_no_look_ahead_by_truncation(market: pd.DataFrame, skew: SkewShape) -> None:
    cut = pd.Timestamp("2023-02-20", tz="UTC")
    short = market[market.index <= cut]
    full = portfolio_backtest(market, _scans(market), START, "2023-02-18", skew).daily
    trunc = portfolio_backtest(short, _scans(short), START, "2023-02-18", skew).daily
    pd.testing.assert_frame_equal(full.reset_index(drop=True), trunc.reset_index(drop=True))
    # and the last date whose t + h is beyond the cut is not scored
    last = portfolio_backtest(short, _scans(short), START, END, skew).daily["date"].max()
    assert last == cut - pd.Timedelta(days=1)


def test_margins_do_not_depend_on_how_dates_are_batched(
    result: PortfolioBacktestResult, market: pd.DataFrame, skew: SkewShape
) -> None:
    small = PortfolioBacktestConfig(block_days=5)
    other = portfolio_backtest(market, _scans(market), START, END, skew, small)
    pd.testing.assert_frame_equal(other.daily, result.daily)


def test_realized_pnl_sums_legs() -> None:
    q = {"A": np.array([1.0, -2.0]), "B": np.array([0.5, 0.0])}
    v0 = {"A": np.array([10.0, 10.0]), "B": np.array([4.0, 4.0])}
    v1 = {"A": np.array([12.0, 9.0]), "B": np.array([2.0, 8.0])}
    np.testing.assert_allclose(realized_pnl(q, v0, v1), [2.0 - 1.0, 2.0])


def test_skew_shape_from_snapshot(skew: SkewShape) -> None:
    assert skew(np.array([0.0]))[0] == pytest.approx(1.0)
    # the ETH smile: both wings above at-the-money, flat beyond the quotes
    assert skew(np.array([-0.5]))[0] > 1.0 and skew(np.array([0.5]))[0] > 1.0
    lo = skew.log_moneyness[0]
    assert skew(np.array([lo - 5.0]))[0] == skew(np.array([lo]))[0]
    chain = pd.DataFrame(
        {
            "creation_timestamp": 1_704_672_000_000,  # 2024-01-08 00:00 UTC
            "expire_date": "7FEB24",
            "strike_price": [80.0, 100.0, 100.0, 125.0],
            "option_type": ["P", "P", "C", "C"],
            "underlying_price": 100.0,
            "mark_iv_b76_derived": [60.0, 50.0, 50.0, 55.0],
        }
    )
    shape = skew_from_snapshot(chain, 30.0)
    np.testing.assert_allclose(shape.ratio, [1.2, 1.0, 1.1])
    np.testing.assert_allclose(shape.log_moneyness, np.log([0.8, 1.0, 1.25]))


def test_config_symbols_and_bad_snapshot(tmp_path: Path) -> None:
    assert PortfolioBacktestConfig().symbols == ("BTC", "ETH")
    with pytest.raises(FileNotFoundError):
        load_snapshot_skew(tmp_path / "missing.csv.gz")
    with pytest.raises(ValueError, match="lacks column"):
        skew_from_snapshot(pd.DataFrame({"strike_price": [1.0]}))
