"""Deribit portfolio margin: published parameters, hand-checked inverse and offset books, and a
short-option book under the extended table checked against QuantLib."""

from __future__ import annotations

import numpy as np
import pytest
import QuantLib as ql
import scipy.sparse as sp

from margin.instruments import InstrumentKind, InstrumentTable
from margin.profiles.deribit_pm import (
    DeribitPMParameters,
    deribit_pm_margin,
    deribit_vol_multipliers,
    standard_moves,
)

S = 50_000.0


def _table(
    kinds: list[InstrumentKind],
    strike: list[float],
    years: list[float],
    size: list[float],
) -> InstrumentTable:
    n = len(kinds)
    inverse = (InstrumentKind.INVERSE_PERP, InstrumentKind.INVERSE_FUTURE)
    return InstrumentTable(
        ids=np.array([f"i{i}" for i in range(n)], dtype=object),
        kind=np.array([int(k) for k in kinds], dtype=np.intp),
        underlying=np.zeros(n, dtype=np.intp),
        underlyings=("BTC",),
        strike=np.array(strike, dtype=np.float64),
        expiry_years=np.array(years, dtype=np.float64),
        is_call=np.array([k == InstrumentKind.OPTION for k in kinds]),
        coin_settled=np.array([k in inverse for k in kinds]),
        contract_size=np.array(size, dtype=np.float64),
    )


def test_standard_grid_is_nine_by_three() -> None:
    params = DeribitPMParameters()
    np.testing.assert_allclose(standard_moves(params), np.arange(-4, 5) * 0.04, atol=1e-15)
    up, down = deribit_vol_multipliers(np.array([7.0, 30.0, 90.0, np.nan]), params)
    np.testing.assert_allclose(up, [1 + 0.5 * (30 / 7) ** 0.3, 1.5, 1 + 0.5 * (1 / 3) ** 0.13, 1])
    np.testing.assert_allclose(down[:3], [1 - 0.25 * (30 / 7) ** 0.3, 0.75, 1 - 0.25 / 3**0.13])


def test_short_inverse_perp_in_coin_by_hand() -> None:
    """Short 1,000 inverse perp contracts of 10 USD at S = 50,000: 0.2 BTC of notional."""
    table = _table([InstrumentKind.INVERSE_PERP], [np.nan], [np.nan], [10.0])
    positions = sp.csr_matrix(np.array([[-1_000.0]]))
    res = deribit_pm_margin(
        table, positions, index=S, mark=[S], forward=[S], vol=[0.0], currency="coin"
    )
    coins = 10_000.0 / S
    worst = coins * (1.0 - 1.0 / 1.16)  # the +16 % move: PnL_coin = q (1 - 1/(1 + m))
    assert res.worst_case[0] == pytest.approx(worst, rel=1e-12)
    assert res.roll_shock[0] == pytest.approx(coins * 0.01, rel=1e-12)
    assert res.im[0] == pytest.approx(worst + coins * 0.01, rel=1e-12)
    assert res.mm[0] == pytest.approx(0.8 * res.im[0], rel=1e-12)
    # the extended table's delta-one entries sit at the range edge and are dampened away
    assert np.all(res.extended_vector == 0.0)
    assert res.worst_scenario[0] == 8 * 3  # +16 % with vol up (first of the last price row)


@pytest.mark.parametrize(("offset", "expected_worst"), [(0.0, 0.16 * S), (0.6, 0.4 * 0.16 * S)])
def test_pnl_offset_between_currency_pairs(offset: float, expected_worst: float) -> None:
    """+1 BTC linear perp (USDC pair) against -50,000 USD inverse perp (USD pair): gains of
    one pair offset the other's losses only at ``pnl_offset``."""
    table = _table(
        [InstrumentKind.LINEAR_PERP, InstrumentKind.INVERSE_PERP],
        [np.nan] * 2,
        [np.nan] * 2,
        [1.0, 10.0],
    )
    positions = sp.csr_matrix(np.array([[1.0, -5_000.0]]))
    params = DeribitPMParameters(pnl_offset=offset)
    res = deribit_pm_margin(
        table, positions, index=S, mark=[S, S], forward=[S, S], vol=[0.0, 0.0], params=params
    )
    assert res.worst_case[0] == pytest.approx(expected_worst, rel=1e-12)
    assert res.roll_shock[0] == pytest.approx(2 * 0.01 * S, rel=1e-12)


def _call(forward: float, strike: float, years: float, vol: float) -> float:
    payoff = ql.PlainVanillaPayoff(ql.Option.Call, float(strike))
    return float(
        ql.BlackCalculator(payoff, float(forward), float(vol * np.sqrt(years)), 1.0).value()
    )


@pytest.mark.parametrize("dampener", [0.0, 100_000.0])
def test_short_otm_calls_under_the_extended_table(dampener: float) -> None:
    """Short 10 calls K = 2 S, 30 days, vol 60 %: large up-moves bite through the extended
    table unless the dampener absorbs them (vol up = max(0.6 × 1.5, 0.5) = 0.9)."""
    years, vol, strike, qty = 30 / 365, 0.60, 2 * S, -10.0
    table = _table([InstrumentKind.OPTION], [strike], [years], [1.0])
    params = DeribitPMParameters(extended_dampener=dampener)
    res = deribit_pm_margin(
        table,
        sp.csr_matrix(np.array([[qty]])),
        index=S,
        mark=[0.0],
        forward=[S],
        vol=[vol],
        params=params,
    )
    base = _call(S, strike, years, vol)
    up_vol = max(vol * 1.5, 0.5)
    extended = [
        qty * (_call(S * (1 + m), strike, years, up_vol) - base) for m in params.extended_moves
    ]
    standard = [
        qty * (_call(S * (1 + m), strike, years, v) - base)
        for m in standard_moves(params)
        for v in (up_vol, vol, vol * 0.75)
    ]
    expected = max(0.0, -min(*standard, *(min(0.0, x + dampener) for x in extended)))
    assert res.worst_case[0] == pytest.approx(expected, rel=1e-9)
    assert res.roll_shock[0] == 0.0  # options carry no roll shock
    if dampener == 0.0:
        assert res.worst_scenario[0] >= 27  # an extended move is the worst case
        assert expected > -min(standard) * 10


def test_rejects_mismatched_positions() -> None:
    table = _table([InstrumentKind.LINEAR_PERP], [np.nan], [np.nan], [1.0])
    with pytest.raises(ValueError, match="instrument columns"):
        deribit_pm_margin(
            table, sp.csr_matrix(np.ones((1, 2))), index=S, mark=[S], forward=[S], vol=[0]
        )


def test_chunks_and_empty_accounts_do_not_change_results() -> None:
    """A multi-account book margined in blocks of one account equals the one-block result;
    accounts without a position in the underlying owe nothing."""
    kinds = [InstrumentKind.LINEAR_PERP, InstrumentKind.INVERSE_PERP, InstrumentKind.OPTION]
    table = _table(kinds, [np.nan, np.nan, 1.1 * S], [np.nan, np.nan, 30 / 365], [1.0, 10.0, 1.0])
    rng = np.random.default_rng(11)
    dense = rng.normal(size=(40, 3)) * np.array([1.0, 500.0, 5.0])
    dense[rng.random(40) < 0.3] = 0.0  # some accounts hold nothing
    positions = sp.csr_matrix(dense)
    market = {"index": S, "mark": [S, S, 0.0], "forward": [S, S, S], "vol": [0.0, 0.0, 0.6]}
    whole = deribit_pm_margin(table, positions, **market)  # type: ignore[arg-type]
    split = deribit_pm_margin(table, positions, chunk_size=1, **market)  # type: ignore[arg-type]
    serial = deribit_pm_margin(table, positions, chunk_size=3, n_threads=1, **market)  # type: ignore[arg-type]
    for other in (split, serial):
        np.testing.assert_array_equal(whole.im, other.im)
        np.testing.assert_array_equal(whole.mm, other.mm)
        np.testing.assert_array_equal(whole.worst_scenario, other.worst_scenario)
        np.testing.assert_array_equal(whole.risk_vector, other.risk_vector)
    empty = ~dense.any(axis=1)
    assert empty.any()
    assert np.all(whole.im[empty] == 0.0)
    assert np.all(whole.im[~empty] > 0.0)
