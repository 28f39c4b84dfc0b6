"""Worked cases with hand-computed answers, and agreement with a per-account loop."""

from __future__ import annotations

import numpy as np
import pytest
from engine_books import BTC, T30, VOL, make_book

from benchmarks.bench_engine import benchmark_methodology, loop_margin, synthetic_book
from margin.engine import compute_margin, compute_margin_sharded, prepare, round_down, round_up
from margin.methodology import Methodology
from margin.pricing import black76_price

CORR = {"mode": "correlation", "underlyings": ("BTC", "ETH")}


def test_delta_hedged_option_book_cross_im_ten_times_below_isolated() -> None:
    # Long 10 calls and short 10 puts at 50k (a synthetic forward, C - P = F - K at r = 0)
    # hedged by 10 short perps: every scenario P&L is exactly 0 (put-call parity).
    book = make_book(
        [("a", "BTC-50000-C", 10.0), ("a", "BTC-50000-P", -10.0), ("a", "BTC-PERP", -10.0)],
        [("a", "USD", 100_000.0)],
    )
    m = Methodology()
    res = compute_margin(book, m, scan_precision="float64")
    assert res.standalone_sum[0] == pytest.approx(0.0, abs=1e-6)
    # hand computation of the cross IM: only floors and add-ons remain
    from scipy.stats import norm

    d1 = VOL * np.sqrt(T30) / 2
    call_delta, put_delta = norm.cdf(d1), norm.cdf(d1) - 1.0
    gross = 10 * call_delta + 10 * abs(put_delta) + 10.0  # coins
    hedged = gross / 2.0  # net delta is 0
    floor = 0.01 * hedged * BTC
    perp = 0.005 * 10 * BTC
    # calls and puts at the same strike pool: +10 calls cover the -10 puts, nothing is naked
    expected_im = floor + perp
    assert res.im[0] == pytest.approx(round_up(np.array([expected_im]), 0.01)[0], abs=0.011)
    # isolated: each leg alone. Long call: worst of vol-down at -16%; short put: -16% vol up
    call0 = black76_price(BTC, 50_000, T30, VOL, 0.0, True)
    put0 = black76_price(BTC, 50_000, T30, VOL, 0.0, False)
    mult = (30.0 / 30.0) ** 0.13  # 30 DTE uses the long-term power (DTE >= 30)
    vol_dn = VOL * (1 - 0.25 * mult)
    vol_up = max(VOL * (1 + 0.5 * mult), 0.40)
    moves = np.linspace(-0.16, 0.16, 9)
    call_loss = max(
        10 * (call0 - black76_price(BTC * (1 + mv), 50_000, T30, v, 0.0, True))
        for mv in moves
        for v in (vol_dn, VOL, vol_up)
    )
    put_loss = max(
        10 * (black76_price(BTC * (1 + mv), 50_000, T30, v, 0.0, False) - put0)
        for mv in moves
        for v in (vol_dn, VOL, vol_up)
    )
    perp_loss = 10 * 0.16 * BTC
    naked_put = 0.005 * 10 * BTC  # alone, the short puts are naked
    assert res.isolated_im[0] > 10 * res.im[0]
    iso_expected = (
        max(call_loss, 0.02 * 10 * call_delta * BTC)
        + max(put_loss, 0.02 * 10 * abs(put_delta) * BTC)
        + naked_put
        + perp_loss
        + perp
    )
    assert res.isolated_im[0] == pytest.approx(iso_expected, rel=1e-9)
    # tails never beat the scan range for this book's legs alone (weight x move <= 0.12)


def test_inverse_perp_books() -> None:
    # a: 2 BTC collateral and short 100,000 USD of inverse perp (a "synthetic dollar")
    # b: 1 BTC collateral and long 50,000 USD of inverse perp (double long BTC)
    book = make_book(
        [("a", "BTC-INV", -10_000.0), ("b", "BTC-INV", 5_000.0)],
        [("a", "BTC", 2.0), ("b", "BTC", 1.0)],
    )
    res = compute_margin(book, Methodology())
    # a: no scenario loss; floor 1% of hedged delta (2 coins) x S; perp contingency on notional
    assert res.standalone_sum[0] == pytest.approx(0.0, abs=1e-9)
    assert res.im[0] == pytest.approx(0.01 * 2.0 * BTC + 0.005 * 100_000.0)  # 1,500
    assert res.mm[0] == pytest.approx(0.8 * 0.01 * 2.0 * BTC + 0.003 * 100_000.0)  # 1,100
    assert res.equity[0] == pytest.approx(2.0 * BTC)
    assert res.delta[0, 0] == pytest.approx(0.0, abs=1e-12)
    # b: at -16% the perp loses (50000 / 50000)(1 - 1/0.84) BTC, worth that x 42,000 USD
    coin_pnl = 1.0 * (1.0 - 1.0 / 0.84)
    perp_loss = -coin_pnl * BTC * 0.84  # 8,000
    assert perp_loss == pytest.approx(8_000.0)
    assert res.standalone_sum[1] == pytest.approx(perp_loss + 0.16 * BTC)  # 16,000
    assert res.im[1] == pytest.approx(16_000.0 + 0.005 * 50_000.0)
    assert res.scenario_labels[res.worst_scenario[1]].startswith("BTC:-16.0%")


@pytest.mark.parametrize(
    ("rho", "basis", "expected_cross"),
    [
        # S = 32,000; P = 16,000 sqrt(2 - 2 rho); cross = S - 0.8 (S - P)
        (0.9, "diversification", 32_000 - 0.8 * (32_000 - 16_000 * np.sqrt(0.2))),
        # standalone basis: max(P, 0.2 S) -> the cap binds when P < 6,400
        (0.99, "standalone", 0.2 * 32_000),
        (0.5, "standalone", 16_000.0),
    ],
)
def test_multi_underlying_offset_cap(rho: float, basis: str, expected_cross: float) -> None:
    # long 2 BTC perp (100k notional) and short 40 ETH perp (100k notional)
    book = make_book([("a", "BTC-PERP", 2.0), ("a", "ETH-PERP", -40.0)], [("a", "USD", 50_000.0)])
    m = Methodology(offsets={**CORR, "correlation": ((1.0, rho), (rho, 1.0)), "cap_basis": basis})
    res = compute_margin(book, m)
    assert res.standalone_sum[0] == pytest.approx(32_000.0)
    assert res.scenario_part[0] == pytest.approx(expected_cross)
    uncapped = 16_000 * np.sqrt(2 - 2 * rho)
    if basis == "diversification" or rho == 0.99:
        assert res.scenario_part[0] > uncapped + 1.0  # the cap binds
    expected_im = expected_cross + 0.005 * 200_000
    assert res.im[0] == pytest.approx(round_up(np.array([expected_im]), 0.01)[0])


def test_same_direction_gets_no_offset() -> None:
    book = make_book([("a", "BTC-PERP", 2.0), ("a", "ETH-PERP", 40.0)])
    m = Methodology(offsets={**CORR, "correlation": ((1.0, 0.9), (0.9, 1.0))})
    res = compute_margin(book, m)
    p = 16_000 * np.sqrt(2 + 2 * 0.9)
    assert res.scenario_part[0] == pytest.approx(32_000 - 0.8 * (32_000 - p))


def test_joint_scenarios_expected_shortfall() -> None:
    # joint moves: BTC and ETH move together in 9 of 10 rows; losses of long BTC/short ETH
    moves = [[0.05 * i, 0.05 * i] for i in range(-4, 5)] + [[-0.10, 0.10]]
    m = Methodology(
        offsets={
            "mode": "joint",
            "underlyings": ("BTC", "ETH"),
            "joint_moves": tuple(tuple(r) for r in moves),
            "confidence": 0.8,
            "measure": "es",
        }
    )
    book = make_book([("a", "BTC-PERP", 2.0), ("a", "ETH-PERP", -40.0)])
    res = compute_margin(book, m)
    # joint P&L: 0 in every co-moving row, -100k x 0.1 x 2 = -20,000 in the last row.
    # m = ceil(0.2 x 10) = 2 worst losses: 20,000 and 0 -> ES = 10,000
    assert res.scenario_part[0] == pytest.approx(32_000 - 0.8 * (32_000 - 10_000))
    var = m.model_copy(update={"offsets": m.offsets.model_copy(update={"measure": "var"})})
    assert compute_margin(book, var).scenario_part[0] == pytest.approx(32_000 - 0.8 * 32_000)


def test_rounding_directions() -> None:
    assert round_up(np.array([100.001, 100.0, 0.1 + 0.2]), 0.01).tolist() == [100.01, 100.0, 0.3]
    assert round_down(np.array([99.999, 100.0, -0.001]), 0.01).tolist() == [99.99, 100.0, -0.01]
    assert round_up(np.array([1.2345]), 0.0).tolist() == [1.2345]


def test_collateral_haircuts_and_borrowing() -> None:
    m = Methodology(haircuts_mm={"BTC": 0.05}, haircuts_im_extra={"BTC": 0.02})
    book = make_book([("a", "BTC-PERP", -1.0)], [("a", "BTC", 1.0), ("a", "USD", 1_000.0)])
    res = compute_margin(book, m)
    assert res.collateral_value[0] == pytest.approx(0.95 * BTC + 1_000.0)
    # short perp hedges the coin: no scenario loss; IM adds the extra haircut on the coin
    assert res.standalone_sum[0] == pytest.approx(0.0, abs=1e-9)
    hedged_floor = 0.01 * 1.0 * BTC
    assert res.im[0] == pytest.approx(hedged_floor + 0.005 * BTC + 0.02 * BTC)


def test_greeks_and_mtm() -> None:
    book = make_book([("a", "BTC-50000-C", 2.0), ("a", "BTC-PERP", -1.0), ("a", "ETH-PERP", 3.0)])
    res = compute_margin(book, Methodology())
    call = black76_price(BTC, 50_000, T30, VOL, 0.0, True)
    assert res.mtm[0] == pytest.approx(2 * call)
    from scipy.stats import norm

    d1 = VOL * np.sqrt(T30) / 2
    assert res.delta[0, 0] == pytest.approx(2 * norm.cdf(d1) - 1.0)
    assert res.delta[0, 1] == pytest.approx(3.0)
    assert res.gamma[0, 0] == pytest.approx(2 * norm.pdf(d1) / (BTC * VOL * np.sqrt(T30)))
    assert res.vega[0, 0] == pytest.approx(2 * BTC * norm.pdf(d1) * np.sqrt(T30))
    assert res.vega[0, 1] == 0.0


def test_matches_per_account_loop_and_is_chunk_invariant() -> None:
    book = synthetic_book(3_000, seed=11)
    m = benchmark_methodology()
    ctx = prepare(book, m, scan_precision="float64")
    res = compute_margin(book, m, context=ctx, chunk_size=1_000)
    rows = np.arange(book.n_accounts)
    loop = loop_margin(ctx, book, rows)
    np.testing.assert_allclose(res.im, loop["im"], rtol=1e-9, atol=0.011)
    np.testing.assert_allclose(res.mm, loop["mm"], rtol=1e-9, atol=0.011)
    again = compute_margin(book, m, context=ctx, chunk_size=257, n_threads=2)
    for field in ("im", "mm", "equity", "isolated_im", "delta", "worst_scenario"):
        np.testing.assert_array_equal(getattr(res, field), getattr(again, field))


def test_float32_scan_agrees_with_float64() -> None:
    book = synthetic_book(3_000, seed=5)
    m = benchmark_methodology()
    fast = compute_margin(book, m, scan_precision="float32")
    exact = compute_margin(book, m, scan_precision="float64")
    # the float32 scan may pick a scenario within float32 rounding of the true worst one;
    # its loss is recomputed in float64, so IM differs by at most ~1e-6 of gross exposure
    np.testing.assert_allclose(fast.scenario_part, exact.scenario_part, rtol=1e-5, atol=0.05)
    assert fast.scenario_part.sum() <= exact.scenario_part.sum() + 1e-6


def test_sharded_equals_whole() -> None:
    book = synthetic_book(2_000, seed=3)
    m = benchmark_methodology()
    whole = compute_margin(book, m)
    for n_shards in (1, 3, 7):
        sharded = compute_margin_sharded(book, m, n_shards)
        for field in ("im", "mm", "equity", "collateral_value", "isolated_im", "vega"):
            np.testing.assert_array_equal(getattr(whole, field), getattr(sharded, field))
        np.testing.assert_array_equal(whole.accounts, sharded.accounts)
    with pytest.raises(ValueError, match="n_shards"):
        compute_margin_sharded(book, m, 0)


def test_result_frame_has_named_columns() -> None:
    book = make_book([("a", "BTC-PERP", 1.0)], [("b", "USD", 10.0)])
    frame = compute_margin(book, Methodology()).to_frame()
    assert list(frame.index) == ["a", "b"]
    assert {"im", "mm", "delta_BTC", "vega_ETH", "worst_scenario_label"} <= set(frame.columns)
    assert frame.loc["b", "im"] == 0.0
    assert frame.loc["b", "equity"] == 10.0
    assert not frame.loc["b", "liquidatable"]


def test_empty_books_and_collateral_only_accounts() -> None:
    book = make_book([("a", "BTC-PERP", 1.0)])
    empty = compute_margin(book.select_accounts(np.array([], dtype=np.intp)), Methodology())
    assert len(empty) == 0 and empty.im.shape == (0,)
    only_cash = compute_margin(make_book([], [("x", "USD", 5.0)]), Methodology())
    assert only_cash.im.tolist() == [0.0] and only_cash.equity.tolist() == [5.0]
    assert only_cash.margin_ratio.tolist() == [0.0] and not only_cash.liquidatable[0]
