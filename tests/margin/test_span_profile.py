"""SPAN: the published 16-scenario layout, hand-checked futures books, spreads on composite
deltas (futures and options), and an option risk array against QuantLib.

Futures have a composite delta of exactly 1 coin per contract, so the futures-only examples
are the same whatever the delta weights; the option examples use the ATM call's composite
delta 0.5318185 (default weights, derived in ``test_span_composite_delta.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import QuantLib as ql
import scipy.sparse as sp
from pydantic import ValidationError

from margin.instruments import InstrumentKind, InstrumentTable
from margin.profiles.span import (
    SPAN_PRICE_FRACTIONS,
    InterCommoditySpread,
    IntraSpreadTier,
    SpanMargin,
    SpanParameters,
    inter_commodity_credit,
    span_margin,
    span_risk_array,
)

F = 3_000.0


def _table(kinds: list[InstrumentKind], strike: list[float], years: list[float]) -> InstrumentTable:
    n = len(kinds)
    return InstrumentTable(
        ids=np.array([f"i{i}" for i in range(n)], dtype=object),
        kind=np.array([int(k) for k in kinds], dtype=np.intp),
        underlying=np.zeros(n, dtype=np.intp),
        underlyings=("ETH",),
        strike=np.array(strike, dtype=np.float64),
        expiry_years=np.array(years, dtype=np.float64),
        is_call=np.array([k == InstrumentKind.OPTION for k in kinds]),
        coin_settled=np.zeros(n, dtype=bool),
        contract_size=np.ones(n),
    )


FUTURES = _table([InstrumentKind.LINEAR_FUTURE] * 2, [np.nan] * 2, [0.1, 0.4])
PARAMS = SpanParameters(
    price_scan_range=0.10,
    vol_scan_range=0.05,
    tier_bounds_years=(0.25,),
    intra_spreads=(IntraSpreadTier(tier_a=0, tier_b=1, charge=20.0),),
    short_option_minimum=15.0,
)


def _span(
    table: InstrumentTable,
    q: list[float],
    params: SpanParameters = PARAMS,
    mark: list[float] | None = None,
    vol: list[float] | None = None,
) -> SpanMargin:
    """One account holding ``q`` contracts; prices at F, vol 60 % unless given."""
    n = len(table)
    return span_margin(
        table,
        sp.csr_matrix(np.array([q])),
        index=F,
        mark=mark if mark is not None else [F] * n,
        forward=[F] * n,
        vol=vol if vol is not None else [0.6] * n,
        params=params,
    )


def test_scenario_layout() -> None:
    np.testing.assert_allclose(
        SPAN_PRICE_FRACTIONS[:14:2], [0, 1 / 3, -1 / 3, 2 / 3, -2 / 3, 1, -1]
    )


@pytest.mark.parametrize(("multiple", "cover", "expected"), [(3.0, 0.35, 1.05), (2.0, 0.35, 1.0)])
def test_long_futures_scan_risk(multiple: float, cover: float, expected: float) -> None:
    """3 × range at 35 % cover (1.05 ranges) beats the full range; 2 × at 35 % (0.7) does not."""
    params = PARAMS.model_copy(
        update={"extreme_move_multiple": multiple, "extreme_cover_fraction": cover}
    )
    res = _span(FUTURES, [2.0, 0.0], params)
    assert res.scan_risk[0] == pytest.approx(2 * expected * 0.10 * F)
    assert res.intra_charge[0] == 0.0


def test_calendar_spread_pays_the_intra_charge_only() -> None:
    res = _span(FUTURES, [3.0, -2.0])
    assert res.scan_risk[0] == pytest.approx(1.05 * 0.10 * F)  # 1 net long future
    assert res.intra_charge[0] == pytest.approx(2 * 20.0)  # 2 spreads at 20 each
    assert res.margin[0] == pytest.approx(1.05 * 0.10 * F + 40.0)
    assert res.net_delta[0] == 1.0  # 3 - 2 futures, 1 coin each


#: Composite delta of a 30-day ATM call at 60 % vol (10 % price scan, 5 vol points, 1 day
#: look-ahead, default weights): Σ_j w_j ½ (Δ_up + Δ_down) = 0.399050 × 0.533694
#: + 0.242036 × (0.610179 + 0.453327) + 0.054006 × (0.680354 + 0.372228)
#: + 0.004433 × (0.742647 + 0.293971) = 0.5318185 (today's N(d1) would be 0.5342697).
ATM_CALL_COMPOSITE = 0.5318185411
ATM_CALL_AND_FUTURE = _table(
    [InstrumentKind.OPTION, InstrumentKind.LINEAR_FUTURE], [F, np.nan], [30 / 365, 0.4]
)


def test_option_calendar_spread_uses_the_composite_delta() -> None:
    """Long 4 ATM calls (tier 0) against short 5 futures (tier 1).

    Tier deltas: 4 × 0.5318185 = 2.1272742 and -5, so 2.1272742 spreads at 20 = 42.545483;
    net delta 2.1272742 - 5 = -2.8727258 coins.
    """
    call = _call(F, F, 30 / 365, 0.6)
    res = _span(ATM_CALL_AND_FUTURE, [4.0, -5.0], mark=[call, F])
    assert res.intra_charge[0] == pytest.approx(4 * ATM_CALL_COMPOSITE * 20.0, abs=1e-7)
    assert res.intra_charge[0] == pytest.approx(42.545483, abs=1e-6)
    assert res.net_delta[0] == pytest.approx(4 * ATM_CALL_COMPOSITE - 5.0, abs=1e-8)
    assert res.risk_requirement[0] == pytest.approx(res.scan_risk[0] + res.intra_charge[0])
    assert res.net_option_value[0] == pytest.approx(4 * call)


def test_the_option_leg_binds_the_spread_count_only_when_smaller() -> None:
    """Long 10 ATM calls (5.318185 coins) against short 5 futures: 5 spreads, charge 100."""
    res = _span(ATM_CALL_AND_FUTURE, [10.0, -5.0], mark=[_call(F, F, 30 / 365, 0.6), F])
    assert res.intra_charge[0] == pytest.approx(5 * 20.0)
    assert res.net_delta[0] == pytest.approx(10 * ATM_CALL_COMPOSITE - 5.0, abs=1e-8)


def _call(forward: float, strike: float, years: float, vol: float) -> float:
    payoff = ql.PlainVanillaPayoff(ql.Option.Call, float(strike))
    return float(
        ql.BlackCalculator(payoff, float(forward), float(vol * np.sqrt(years)), 1.0).value()
    )


def test_option_risk_array_against_quantlib() -> None:
    years, vol, strike = 30 / 365, 0.6, 3_300.0
    table = _table([InstrumentKind.OPTION], [strike], [years])
    now = _call(F, strike, years, vol)
    loss = span_risk_array(table, [now], [F], [vol], 0.0, PARAMS)[0]
    fractions = SPAN_PRICE_FRACTIONS.copy()
    fractions[14:] = [3.0, -3.0]
    vols = [vol + 0.05, vol - 0.05] * 7 + [vol, vol]
    later = years - 1 / 365
    expected = [
        -(_call(F * (1 + f * 0.10), strike, later, v) - now) * (0.35 if i >= 14 else 1.0)
        for i, (f, v) in enumerate(zip(fractions, vols, strict=True))
    ]
    np.testing.assert_allclose(loss, expected, rtol=1e-10, atol=1e-9)


def test_short_option_minimum_and_net_option_value() -> None:
    """Two far-OTM short puts: tiny scan risk, so the short option minimum binds."""
    table = _table([InstrumentKind.OPTION], [1_000.0], [7 / 365])
    table = InstrumentTable(**{**table.__dict__, "is_call": np.array([False])})
    res = _span(table, [-2.0], mark=[0.01], vol=[0.3])
    assert res.scan_risk[0] < 30.0
    assert res.risk_requirement[0] == pytest.approx(max(res.scan_risk[0], 30.0))
    assert res.net_option_value[0] == pytest.approx(-0.02)
    assert res.margin[0] == pytest.approx(res.risk_requirement[0] + 0.02)


def test_inter_commodity_credit_by_hand() -> None:
    """Long 2 A futures against short 20 B futures with ratio 1 : 10 -> 2 spreads."""
    a = _span(FUTURES, [2.0, 0.0])
    b_table = _table([InstrumentKind.LINEAR_FUTURE], [np.nan], [0.1])
    b = span_margin(
        b_table,
        sp.csr_matrix(np.array([[-20.0]])),
        index=100.0,
        mark=[100.0],
        forward=[100.0],
        vol=[0.5],
        params=PARAMS,
    )
    credit_a, credit_b = inter_commodity_credit(
        a, b, InterCommoditySpread(delta_ratio_a=1.0, delta_ratio_b=10.0, credit_rate=0.5)
    )
    # A: 2 spreads × 1 coin × (scan / 2 coins) × 50 % = 50 % of A's scan; same for B.
    assert credit_a[0] == pytest.approx(0.5 * a.scan_risk[0])
    assert credit_b[0] == pytest.approx(0.5 * b.scan_risk[0])


def test_inter_commodity_credit_on_an_option_leg() -> None:
    """Long 4 ATM calls on A (net delta 2.1272742 coins) against short 5 B futures, 1 : 1.

    spreads = min(2.1272742, 5) = 2.1272742; credit_A = 0.5 × 2.1272742 × scan_A / 2.1272742
    = 0.5 × scan_A; credit_B = 0.5 × 2.1272742 × scan_B / 5 = 0.21272742 × scan_B, where
    scan_B = 5 futures × 1.05 × 10 % × 3000 = 1575, so credit_B = 335.04568.
    """
    option_table = ATM_CALL_AND_FUTURE.take(np.array([0]))
    a = _span(option_table, [4.0], mark=[_call(F, F, 30 / 365, 0.6)])
    b = _span(FUTURES, [-5.0, 0.0])
    credit_a, credit_b = inter_commodity_credit(
        a, b, InterCommoditySpread(delta_ratio_a=1.0, delta_ratio_b=1.0, credit_rate=0.5)
    )
    assert a.net_delta[0] == pytest.approx(4 * ATM_CALL_COMPOSITE, abs=1e-8)
    assert credit_a[0] == pytest.approx(0.5 * a.scan_risk[0])
    assert credit_b[0] == pytest.approx(0.5 * 4 * ATM_CALL_COMPOSITE / 5 * b.scan_risk[0])
    assert b.scan_risk[0] == pytest.approx(1575.0)
    assert credit_b[0] == pytest.approx(335.04568, abs=1e-5)


def test_same_side_deltas_get_no_inter_credit() -> None:
    a = _span(FUTURES, [2.0, 0.0])
    credit_a, _ = inter_commodity_credit(
        a, a, InterCommoditySpread(delta_ratio_a=1.0, delta_ratio_b=1.0, credit_rate=0.5)
    )
    assert credit_a[0] == 0.0


def test_rejects_unknown_tier() -> None:
    with pytest.raises(ValidationError, match="tiers must differ and exist"):
        SpanParameters(
            price_scan_range=0.1,
            vol_scan_range=0.05,
            intra_spreads=(IntraSpreadTier(tier_a=0, tier_b=3, charge=1.0),),
        )
