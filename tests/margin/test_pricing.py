"""Black-76 prices, Greeks and implied vol against parity, finite differences and QuantLib."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from margin.pricing import black76_greeks, black76_price, implied_vol

ql = pytest.importorskip("QuantLib")

RNG = np.random.default_rng(20240601)
N = 400
F = RNG.uniform(50.0, 150.0, N)
K = F * np.exp(RNG.uniform(-0.8, 0.8, N))
T = RNG.uniform(1.0 / 365.0, 2.0, N)
VOL = RNG.uniform(0.05, 1.5, N)
R = RNG.uniform(-0.01, 0.08, N)
CALL = RNG.random(N) < 0.5


def _ql_calc(f: float, k: float, t: float, v: float, r: float, call: bool) -> object:
    kind = ql.Option.Call if call else ql.Option.Put
    return ql.BlackCalculator(ql.PlainVanillaPayoff(kind, k), f, v * np.sqrt(t), np.exp(-r * t))


def test_prices_match_quantlib() -> None:
    ours = black76_price(F, K, T, VOL, R, CALL)
    ref = np.array(
        [_ql_calc(*args).value() for args in zip(F, K, T, VOL, R, CALL, strict=True)]  # type: ignore[attr-defined]
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_greeks_match_quantlib() -> None:
    g = black76_greeks(F, K, T, VOL, R, CALL)
    calcs = [_ql_calc(*args) for args in zip(F, K, T, VOL, R, CALL, strict=True)]
    delta = np.array([c.deltaForward() for c in calcs])  # type: ignore[attr-defined]
    gamma = np.array([c.gammaForward() for c in calcs])  # type: ignore[attr-defined]
    vega = np.array([c.vega(t) for c, t in zip(calcs, T, strict=True)])  # type: ignore[attr-defined]
    # QuantLib's spot theta with spot = forward equals the forward-held-fixed theta.
    theta = np.array([c.theta(f, t) for c, f, t in zip(calcs, F, T, strict=True)])  # type: ignore[attr-defined]
    np.testing.assert_allclose(g.delta, delta, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g.gamma, gamma, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(g.vega, vega, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(g.theta, theta, rtol=1e-8, atol=1e-9)


def test_put_call_parity() -> None:
    call = black76_price(F, K, T, VOL, R, True)
    put = black76_price(F, K, T, VOL, R, False)
    np.testing.assert_allclose(call - put, np.exp(-R * T) * (F - K), rtol=0, atol=1e-9)


def test_greeks_match_finite_differences() -> None:
    g = black76_greeks(F, K, T, VOL, R, CALL)
    h_f = 1e-5 * F
    up = black76_price(F + h_f, K, T, VOL, R, CALL)
    mid = black76_price(F, K, T, VOL, R, CALL)
    dn = black76_price(F - h_f, K, T, VOL, R, CALL)
    np.testing.assert_allclose(g.delta, (up - dn) / (2 * h_f), atol=1e-6)
    h_g = 1e-3 * F
    fd_gamma = (
        black76_price(F + h_g, K, T, VOL, R, CALL)
        - 2 * mid
        + black76_price(F - h_g, K, T, VOL, R, CALL)
    ) / h_g**2
    np.testing.assert_allclose(g.gamma, fd_gamma, rtol=1e-3, atol=1e-6)
    h_v = 1e-6
    fd_vega = (
        black76_price(F, K, T, VOL + h_v, R, CALL) - black76_price(F, K, T, VOL - h_v, R, CALL)
    ) / (2 * h_v)
    np.testing.assert_allclose(g.vega, fd_vega, rtol=1e-6, atol=1e-6)
    # theta = -dV/dT with the rate and the forward held fixed.
    h_t = 1e-6 * T
    fd_theta = -(
        black76_price(F, K, T + h_t, VOL, R, CALL) - black76_price(F, K, T - h_t, VOL, R, CALL)
    ) / (2 * h_t)
    np.testing.assert_allclose(g.theta, fd_theta, rtol=1e-4, atol=1e-4)


def test_expiry_and_zero_vol_give_discounted_intrinsic_without_warnings() -> None:
    f = np.array([100.0, 100.0, 100.0, 100.0])
    k = np.array([80.0, 120.0, 80.0, 120.0])
    call = np.array([True, True, False, False])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        at_expiry = black76_price(f, k, 0.0, 0.5, 0.05, call)
        past_expiry = black76_price(f, k, -0.1, 0.5, 0.05, call)
        zero_vol = black76_price(f, k, 1.0, 0.0, 0.05, call)
        tiny_vol = black76_price(f, k, 1.0, 1e-14, 0.05, call)
        g = black76_greeks(f, k, 0.0, 0.5, 0.05, call)
        g_tiny = black76_greeks(f, k, 1.0, 1e-14, 0.05, call)
    np.testing.assert_array_equal(at_expiry, [20.0, 0.0, 0.0, 20.0])
    np.testing.assert_array_equal(past_expiry, at_expiry)
    np.testing.assert_allclose(zero_vol, np.exp(-0.05) * np.array([20.0, 0.0, 0.0, 20.0]))
    np.testing.assert_allclose(tiny_vol, zero_vol, rtol=1e-12)
    np.testing.assert_array_equal(g.delta, [1.0, 0.0, 0.0, -1.0])
    np.testing.assert_array_equal(g.gamma, 0.0)
    np.testing.assert_array_equal(g.vega, 0.0)
    np.testing.assert_allclose(g_tiny.delta, np.exp(-0.05) * np.array([1.0, 0.0, 0.0, -1.0]))


def test_small_but_live_vol_is_continuous_with_the_limit() -> None:
    vols = np.array([1e-11, 1e-8, 1e-4])
    prices = black76_price(100.0, 90.0, 0.5, vols, 0.0, True)
    np.testing.assert_allclose(prices, 10.0, rtol=1e-12)


def test_deep_in_and_out_of_the_money() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deep_itm = black76_price(1e5, 1.0, 0.25, 0.8, 0.0, True)
        deep_otm = black76_price(1.0, 1e5, 0.25, 0.8, 0.0, True)
        g = black76_greeks([1e5, 1.0], [1.0, 1e5], 0.25, 0.8, 0.0, True)
    assert deep_itm == pytest.approx(1e5 - 1.0, rel=1e-14)
    assert 0.0 <= deep_otm < 1e-150
    np.testing.assert_allclose(g.delta, [1.0, 0.0], atol=1e-15)
    assert np.all(np.isfinite(g.gamma)) and np.all(np.isfinite(g.vega))


def test_broadcasting_shapes() -> None:
    strikes = np.array([80.0, 100.0, 120.0])[:, None]
    vols = np.array([0.2, 0.4])[None, :]
    out = black76_price(100.0, strikes, 1.0, vols, 0.0, True)
    assert out.shape == (3, 2)
    assert black76_price(100.0, 100.0, 1.0, 0.2, 0.0, True).shape == ()
    g = black76_greeks(100.0, strikes, 1.0, vols, 0.0, [True, False])
    assert g.delta.shape == (3, 2)
    # price increases with vol, decreases with strike for calls
    assert np.all(np.diff(out, axis=1) > 0)
    assert np.all(np.diff(out, axis=0) < 0)


def test_implied_vol_round_trip() -> None:
    prices = black76_price(F, K, T, VOL, R, CALL)
    # Where vega is negligible relative to price tolerance the vol is not identified.
    vega = black76_greeks(F, K, T, VOL, R, CALL).vega
    identified = vega > 1e-6 * F
    iv = implied_vol(prices, F, K, T, R, CALL)
    np.testing.assert_allclose(iv[identified], VOL[identified], rtol=1e-7)
    np.testing.assert_allclose(black76_price(F, K, T, iv, R, CALL), prices, rtol=1e-9, atol=1e-9)


def test_implied_vol_matches_quantlib() -> None:
    # options whose price carries vol information (vega not negligible)
    sel = np.flatnonzero(black76_greeks(F, K, T, VOL, R, CALL).vega > 1e-3 * F)[:60]
    f_, k_, t_, v_, r_, c_ = F[sel], K[sel], T[sel], VOL[sel], R[sel], CALL[sel]
    prices = black76_price(f_, k_, t_, v_, r_, c_)
    ours = implied_vol(prices, f_, k_, t_, r_, c_)
    ref = []
    for p, f, k, t, r, c in zip(prices, f_, k_, t_, r_, c_, strict=True):
        kind = ql.Option.Call if c else ql.Option.Put
        std = ql.blackFormulaImpliedStdDev(kind, k, f, p, np.exp(-r * t), 0.0, 0.5, 1e-14, 500)
        ref.append(std / np.sqrt(t))
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_implied_vol_nan_outside_no_arbitrage_bounds() -> None:
    disc = np.exp(-0.05)
    prices = np.array([20.0 * disc - 1e-9, 100.0 * disc, 150.0, -1.0, np.nan, 5.0])
    iv = implied_vol(prices, 100.0, 80.0, [1.0, 1.0, 1.0, 1.0, 1.0, 0.0], 0.05, True)
    assert np.all(np.isnan(iv))


@settings(max_examples=200, deadline=None)
@given(
    f=st.floats(1.0, 1e5),
    log_m=st.floats(-2.0, 2.0),
    t=st.floats(1e-3, 3.0),
    vol=st.floats(0.02, 3.0),
    call=st.booleans(),
)
def test_implied_vol_round_trip_property(
    f: float, log_m: float, t: float, vol: float, call: bool
) -> None:
    k = f * np.exp(log_m)
    price = black76_price(f, k, t, vol, 0.0, call)
    iv = implied_vol(price, f, k, t, 0.0, call)
    if np.isnan(iv):
        # only allowed when the price is indistinguishable from its bounds
        intrinsic = max((f - k) if call else (k - f), 0.0)
        assert price - intrinsic < 1e-9 * f or (f if call else k) - price < 1e-9 * f
    else:
        assert black76_price(f, k, t, iv, 0.0, call) == pytest.approx(price, abs=1e-9 * f)
