"""SPAN composite delta: default weights, Black-76 deltas at the 7 price points against scipy,
limits, put-call parity, and the validation of the weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy.stats import norm

from margin.instruments import InstrumentKind, InstrumentTable, instrument_greeks
from margin.profiles.span import DEFAULT_DELTA_WEIGHTS, SpanParameters, span_composite_delta

F = 3_000.0
#: Price points of the delta weights, as fractions of the price scan range.
POINTS = np.array([0.0, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0]) / 3.0
PARAMS = SpanParameters(price_scan_range=0.10, vol_scan_range=0.05)


def _table(
    kinds: list[InstrumentKind],
    strike: list[float],
    years: list[float],
    is_call: list[bool] | None = None,
    size: list[float] | None = None,
) -> InstrumentTable:
    n = len(kinds)
    return InstrumentTable(
        ids=np.array([f"i{i}" for i in range(n)], dtype=object),
        kind=np.array([int(k) for k in kinds], dtype=np.intp),
        underlying=np.zeros(n, dtype=np.intp),
        underlyings=("ETH",),
        strike=np.array(strike, dtype=np.float64),
        expiry_years=np.array(years, dtype=np.float64),
        is_call=np.array(
            is_call if is_call is not None else [k == InstrumentKind.OPTION for k in kinds]
        ),
        coin_settled=np.array([k == InstrumentKind.INVERSE_FUTURE for k in kinds]),
        contract_size=np.array(size if size is not None else [1.0] * n, dtype=np.float64),
    )


def _scipy_delta(
    forward: float, strike: float, years: float, vol: float, rate: float, call: bool
) -> float:
    """Black-76 delta ``D N(d1)`` (call) or ``-D N(-d1)`` (put) written out with scipy."""
    d1 = (np.log(forward / strike) + 0.5 * vol * vol * years) / (vol * np.sqrt(years))
    disc = np.exp(-rate * years)
    return float(disc * norm.cdf(d1) if call else -disc * norm.cdf(-d1))


def _expected_composite(
    strike: float,
    years: float,
    vol: float,
    params: SpanParameters,
    *,
    call: bool = True,
    rate: float = 0.0,
) -> float:
    """Σ_j w_j ½ (Δ(F_j, σ+VSR, t−1d) + Δ(F_j, max(σ−VSR, floor), t−1d)), F_j = F (1 + f_j R)."""
    later = years - params.look_ahead_days / 365.0
    up = vol + params.vol_scan_range
    down = max(vol - params.vol_scan_range, params.min_vol)
    total = 0.0
    for w, f in zip(params.delta_weights, POINTS, strict=True):
        fj = F * (1.0 + f * params.price_scan_range)
        pair = _scipy_delta(fj, strike, later, up, rate, call)
        pair += _scipy_delta(fj, strike, later, down, rate, call)
        total += w * 0.5 * pair
    return total


def _composite(table: InstrumentTable, params: SpanParameters = PARAMS, **kw: float) -> np.ndarray:
    n = len(table)
    vol = kw.get("vol", 0.6)
    rate = kw.get("rate", 0.0)
    return span_composite_delta(table, [F] * n, [F] * n, F, [vol] * n, rate, params)


def test_default_weights_are_the_normal_density_at_z_0_1_2_3() -> None:
    density = norm.pdf([0.0, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0])
    np.testing.assert_allclose(DEFAULT_DELTA_WEIGHTS, density / density.sum(), rtol=1e-14)
    # the figures quoted in docs/methodologies.md
    np.testing.assert_allclose(
        DEFAULT_DELTA_WEIGHTS,
        [
            0.399050279652,
            *[0.242036229376] * 2,
            *[0.054005582622] * 2,
            *[0.004433048175] * 2,
        ],
        atol=1e-12,
    )
    assert PARAMS.delta_weights == DEFAULT_DELTA_WEIGHTS


def test_futures_and_perps_have_their_coins_per_contract() -> None:
    kinds = [
        InstrumentKind.LINEAR_FUTURE,
        InstrumentKind.LINEAR_PERP,
        InstrumentKind.SPOT,
        InstrumentKind.INVERSE_FUTURE,
    ]
    table = _table(kinds, [np.nan] * 4, [0.2, np.nan, np.nan, 0.2], size=[2.5, 1.0, 0.1, 30.0])
    # linear kinds: size × mark / index = size; inverse: USD notional / index = 30 / 3000 coins
    assert _composite(table).tolist() == [2.5, 1.0, 0.1, 0.01]


def test_atm_call_against_scipy() -> None:
    """ATM call, 30 days, 60 % vol, 10 % price scan, 5 vol points, one day of look-ahead.

    Averaged up/down Black deltas at t' = 29/365 per price point (w = default weights):
    F_j = 3000: 0.533694 (w 0.399050), 3100: 0.610179 and 2900: 0.453327 (w 0.242036 each),
    3200: 0.680354 and 2800: 0.372228 (w 0.054006), 3300: 0.742647 and 2700: 0.293971
    (w 0.004433) -> Σ = 0.531819, below today's N(d1) = N(0.3 × sqrt(30/365)) = 0.534270.
    """
    table = _table([InstrumentKind.OPTION], [F], [30 / 365], size=[2.0])
    expected = _expected_composite(F, 30 / 365, 0.6, PARAMS)
    assert expected == pytest.approx(0.5318185411, abs=1e-9)
    np.testing.assert_allclose(_composite(table), [2.0 * expected], rtol=1e-12)


def test_put_with_rate_and_vol_floor_against_scipy() -> None:
    """A 5 % vol put with 8 vol points of scan: the down leg uses the 1 % floor; rate 3 %."""
    params = PARAMS.model_copy(update={"vol_scan_range": 0.08, "look_ahead_days": 2.0})
    table = _table([InstrumentKind.OPTION], [2_900.0], [20 / 365], is_call=[False])
    expected = _expected_composite(2_900.0, 20 / 365, 0.05, params, call=False, rate=0.03)
    np.testing.assert_allclose(_composite(table, params, vol=0.05, rate=0.03), [expected])


def test_deep_in_and_out_of_the_money() -> None:
    table = _table(
        [InstrumentKind.OPTION] * 4,
        [1_000.0, 10_000.0, 10_000.0, 1_000.0],
        [30 / 365] * 4,
        is_call=[True, True, False, False],
    )
    itm_call, otm_call, itm_put, otm_put = _composite(table)
    assert itm_call == pytest.approx(1.0, abs=1e-9)
    assert otm_call == pytest.approx(0.0, abs=1e-9)
    assert itm_put == pytest.approx(-1.0, abs=1e-9)
    assert otm_put == pytest.approx(0.0, abs=1e-9)


def test_one_point_no_vol_scan_no_look_ahead_is_todays_delta() -> None:
    """All weight on the unmoved price, no vol scan, no look-ahead: the engine's own delta."""
    params = SpanParameters(
        price_scan_range=0.10,
        vol_scan_range=0.0,
        look_ahead_days=0.0,
        delta_weights=(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    )
    table = _table(
        [InstrumentKind.OPTION, InstrumentKind.OPTION, InstrumentKind.LINEAR_FUTURE],
        [2_800.0, 3_500.0, np.nan],
        [10 / 365, 90 / 365, 0.3],
        is_call=[True, False, False],
    )
    today, _, _ = instrument_greeks(table, [F] * 3, [F] * 3, [F] * 3, [0.6] * 3, [0.0] * 3)
    np.testing.assert_allclose(_composite(table, params), today, rtol=1e-14)


def test_expiring_within_the_look_ahead_uses_the_payoff_delta() -> None:
    """Expiry (12 h) inside the one-day look-ahead: each point's delta is the step 1{F_j > K}."""
    table = _table([InstrumentKind.OPTION], [3_050.0], [0.5 / 365])
    w = DEFAULT_DELTA_WEIGHTS
    # F_j > 3050 at +1/3, +2/3, +1 (3100, 3200, 3300): weights 1, 3, 5
    np.testing.assert_allclose(_composite(table), [w[1] + w[3] + w[5]], rtol=1e-14)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    strike=st.floats(500.0, 8_000.0),
    days=st.floats(2.0, 400.0),
    vol=st.floats(0.05, 2.0),
    rate=st.floats(0.0, 0.1),
    raw=st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7).filter(lambda r: sum(r) > 0.1),
)
def test_put_call_parity_and_bounds(
    strike: float, days: float, vol: float, rate: float, raw: list[float]
) -> None:
    """Call − put composite delta = D(t') whatever the weights; calls in [0, D], puts in [−D, 0]."""
    params = PARAMS.model_copy(
        update={"delta_weights": tuple(float(x) for x in np.asarray(raw) / np.sum(raw))}
    )
    table = _table(
        [InstrumentKind.OPTION] * 2, [strike] * 2, [days / 365] * 2, is_call=[True, False]
    )
    call, put = _composite(table, params, vol=vol, rate=rate)
    disc = np.exp(-rate * (days - 1.0) / 365)
    assert call - put == pytest.approx(disc, abs=1e-12)
    assert -1e-15 <= call <= disc + 1e-15
    assert -disc - 1e-15 <= put <= 1e-15


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ((0.5, 0.5), "delta_weights needs 7 weights .* got 2"),
        ((1.2, -0.2, 0.0, 0.0, 0.0, 0.0, 0.0), "weight of price point \\+1/3 is -0.2"),
        ((np.nan, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0), "finite and non-negative.* point 0 is nan"),
        ((0.4, 0.3, 0.3, 0.1, 0.0, 0.0, 0.0), "must sum to 1 \\(within 1e-09\\), they sum to 1.1"),
    ],
)
def test_bad_weights_are_rejected(weights: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SpanParameters(price_scan_range=0.1, vol_scan_range=0.05, delta_weights=weights)


def test_weights_need_not_be_symmetric_and_may_miss_one_by_less_than_1e_9() -> None:
    weights = (0.5, 0.3, 0.1, 0.05, 0.05, 0.0, 0.0 + 5e-10)
    params = SpanParameters(price_scan_range=0.1, vol_scan_range=0.05, delta_weights=weights)
    assert params.delta_weights == weights
