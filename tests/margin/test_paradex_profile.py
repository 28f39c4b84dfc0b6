"""Paradex portfolio margin: published parameter table, hand-checked books, QuantLib reference."""

from __future__ import annotations

import numpy as np
import pytest
import QuantLib as ql
import scipy.sparse as sp

from margin.instruments import InstrumentKind, InstrumentTable
from margin.profiles.paradex_pm import (
    BTC_ETH_SCENARIOS,
    ParadexPMParameters,
    min_delta_risk,
    paradex_margin,
    paradex_vol_multipliers,
)

S = 100_000.0


def _table(kinds: list[InstrumentKind], strike: list[float], years: list[float]) -> InstrumentTable:
    n = len(kinds)
    return InstrumentTable(
        ids=np.array([f"i{i}" for i in range(n)], dtype=object),
        kind=np.array([int(k) for k in kinds], dtype=np.intp),
        underlying=np.zeros(n, dtype=np.intp),
        underlyings=("BTC",),
        strike=np.array(strike, dtype=np.float64),
        expiry_years=np.array(years, dtype=np.float64),
        is_call=np.array([k == InstrumentKind.OPTION for k in kinds]),
        coin_settled=np.zeros(n, dtype=bool),
        contract_size=np.ones(n),
    )


SPOT_PERP = _table(
    [InstrumentKind.SPOT, InstrumentKind.LINEAR_PERP], [np.nan, np.nan], [np.nan, np.nan]
)


def test_published_table_shape_and_linear_equivalent_tails() -> None:
    assert len(BTC_ETH_SCENARIOS) == 24
    tails = [s for s in BTC_ETH_SCENARIOS if s.weight < 1.0]
    # weight × |move| = 0.12 for every tail: a linear book loses at most a 12 % move there.
    np.testing.assert_allclose([t.weight * abs(t.spot_move) for t in tails], 0.12, rtol=0.01)


@pytest.mark.parametrize(
    ("dte", "up", "down"),
    [
        (1, 2.1097, 0.3897),
        (7, 1.6190, 0.6596),
        (14, 1.5028, 0.7235),
        (30, 1.4000, 0.7800),
        (60, 1.3655, 0.7990),
        (180, 1.3169, 0.8257),
    ],
)
def test_vol_multipliers(dte: float, up: float, down: float) -> None:
    mult = paradex_vol_multipliers(np.array([dte]), ParadexPMParameters())
    assert mult[0, 0] == pytest.approx(up, abs=5e-5)  # scenario 1: vol +40 %
    assert mult[0, 2] == pytest.approx(down, abs=5e-5)  # scenario 3: vol -22 %


def test_long_perp_by_hand() -> None:
    """Long 1 perp: worst weighted loss is the -16 % standard move (tails lose 12 % at most)."""
    positions = sp.csr_matrix(np.array([[0.0, 1.0]]))
    res = paradex_margin(
        SPOT_PERP,
        positions,
        spot=S,
        mark=[S, S],
        forward=[S, S],
        vol=[0.0, 0.0],
        funding_provision=30.0,
        fee_provision=20.0,
    )
    assert res.scan_risk[0] == pytest.approx(0.16 * S)
    assert res.min_delta_risk[0] == pytest.approx(0.02 * S)
    assert res.imr[0] == pytest.approx(0.16 * S + 50.0)
    assert res.mmr[0] == pytest.approx(0.5 * 0.16 * S + 50.0)
    assert BTC_ETH_SCENARIOS[int(res.worst_scenario[0])].spot_move == pytest.approx(-0.16)


def test_spot_hedged_by_short_perp_pays_the_hedged_delta_charge() -> None:
    """+1 spot / -1 perp: no scenario loss, net delta 0, hedged delta 1 -> h × S."""
    positions = sp.csr_matrix(np.array([[1.0, -1.0]]))
    res = paradex_margin(SPOT_PERP, positions, spot=S, mark=[S, S], forward=[S, S], vol=[0.0, 0.0])
    assert res.scan_risk[0] == pytest.approx(0.0, abs=1e-6)
    assert res.min_delta_risk[0] == pytest.approx(0.01 * S)
    assert res.npimr[0] == pytest.approx(0.01 * S)


def test_min_delta_formula() -> None:
    params = ParadexPMParameters()
    got = min_delta_risk([3.0, -1.0], [5.0, 1.0], 2_000.0, params)
    np.testing.assert_allclose(got, [(0.02 * 3 + 0.01 * 1) * 2_000, 0.02 * 2_000])


def _quantlib_call(forward: float, strike: float, years: float, vol: float) -> float:
    payoff = ql.PlainVanillaPayoff(ql.Option.Call, float(strike))
    std = float(vol * np.sqrt(years))
    return float(ql.BlackCalculator(payoff, float(forward), std, 1.0).value())


def test_short_otm_call_tail_scenario_against_quantlib() -> None:
    """Short 1 call K = 200k, 7 days, vol 60 %: the +100 % tail (w 12 %) is the worst case."""
    years, vol, strike = 7 / 365, 0.60, 200_000.0
    table = _table([InstrumentKind.OPTION], [strike], [years])
    positions = sp.csr_matrix(np.array([[-1.0]]))
    res = paradex_margin(table, positions, spot=S, mark=[0.0], forward=[S], vol=[vol])
    base = _quantlib_call(S, strike, years, vol)
    mult = 1 + 0.40 * (30 / 7) ** 0.30
    losses = {
        s.spot_move: s.weight
        * (_quantlib_call(S * (1 + s.spot_move), strike, years, max(vol * mult, 0.40)) - base)
        for s in BTC_ETH_SCENARIOS
        if s.vol_shock > 0
    }
    worst_move = max(losses, key=lambda m: losses[m])
    assert res.scan_risk[0] == pytest.approx(losses[worst_move], rel=1e-9)
    assert BTC_ETH_SCENARIOS[int(res.worst_scenario[0])].spot_move == worst_move
    assert worst_move >= 1.0  # only a tail reaches a strike twice the spot


def test_rejects_several_underlyings() -> None:
    table = _table([InstrumentKind.SPOT, InstrumentKind.SPOT], [np.nan] * 2, [np.nan] * 2)
    table = InstrumentTable(
        **{**table.__dict__, "underlying": np.array([0, 1]), "underlyings": ("BTC", "ETH")}
    )
    with pytest.raises(ValueError, match="one underlying"):
        paradex_margin(
            table, sp.csr_matrix(np.ones((1, 2))), spot=S, mark=[S, S], forward=[S, S], vol=[0, 0]
        )
