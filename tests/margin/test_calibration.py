"""Calibration: FHS scan ranges, vol shocks, tails, perps, haircuts, correlations, fallbacks."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from margin.apc import ApcConfig
from margin.calibration import (
    CalibrationConfig,
    UnderlyingInputs,
    calibrate_offsets,
    calibrate_underlying,
    calibrate_vol_shock,
    ewma_correlation,
    haircut,
    perp_margin,
    scan_from_log_quantiles,
    stressed_correlation,
    tail_weights,
    walk_forward_scan,
)
from margin.parameters import ScanRange


def synthetic_daily(seed: int, n: int = 800, sigma: float = 0.03, dvol: bool = True):  # type: ignore[no-untyped-def]
    """Log-normal prices with a known, slowly varying daily vol (synthetic, seeded)."""
    rng = np.random.default_rng(seed)
    vol = sigma * np.exp(0.3 * np.sin(np.arange(n) / 60.0))
    ret = vol * rng.standard_normal(n)
    dates = pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC")
    close = 100 * np.exp(np.cumsum(ret))
    daily = pd.DataFrame(
        {
            "close": close,
            "rv": vol**2,
            "log_volume": np.log(np.full(n, 5e8)),
        },
        index=dates,
    )
    if dvol:
        daily["dvol"] = vol * math.sqrt(365) * np.exp(0.05 * rng.standard_normal(n))
    # forecast at t of the move t -> t+1 is the next day's true variance
    variance = pd.Series(np.append(vol[1:], vol[-1]) ** 2, index=dates)
    return daily, variance


def test_scan_closed_form() -> None:
    long, short = scan_from_log_quantiles(0.05, -2.33, 2.5, 0.001)
    assert long == pytest.approx(1 - math.exp(-0.1165))
    assert short == pytest.approx(math.exp(0.125) - 1)
    long, short = scan_from_log_quantiles(1e-6, -1.0, 1.0, 0.002)
    assert long == short == 0.002


def test_fhs_recovers_normal_quantile() -> None:
    daily, variance = synthetic_daily(1, n=3000)
    moves = np.log(daily["close"].shift(-1) / daily["close"])
    scan = walk_forward_scan(moves, variance, 0.99, 1, min_residuals=250)
    q = scan["q_high"].dropna().iloc[-1]
    assert q == pytest.approx(stats.norm.ppf(0.99), abs=0.15)
    # the residual of day s is known at s + 1: 250 residuals first exist on day 250
    assert scan["long"].iloc[:250].isna().all()
    assert scan["long"].iloc[250:].notna().all()


def test_walk_forward_scan_has_no_look_ahead() -> None:
    daily, variance = synthetic_daily(2, n=900)
    moves = np.log(daily["close"].shift(-1) / daily["close"])
    full = walk_forward_scan(moves, variance, 0.99, 1, min_residuals=100)
    cut = daily.index[600]
    truncated_moves = np.log(daily["close"][:cut].shift(-1) / daily["close"][:cut])
    part = walk_forward_scan(truncated_moves, variance[:cut], 0.99, 1, min_residuals=100)
    pd.testing.assert_frame_equal(full.loc[:cut], part)


def test_tail_weights_reproduce_paradex_table() -> None:
    # Paradex BTC/ETH: weight x |move| = 0.12 (margin-methodologies.md, section 2.2).
    tails = tail_weights((-0.66, -0.33, 0.5, 1, 2, 3, 4, 5), 0.12)
    expected = {-0.66: 0.18, -0.33: 0.36, 0.5: 0.24, 1: 0.12, 2: 0.06, 3: 0.04, 4: 0.03, 5: 0.024}
    for tail in tails:
        assert tail.weight == pytest.approx(expected[tail.move], abs=0.004)
        assert tail.weight * abs(tail.move) == pytest.approx(0.12)
    assert tail_weights((0.05,), 0.12)[0].weight == 1.0  # capped at 1


def test_perp_and_haircut() -> None:
    im, mm = ScanRange(long=0.08, short=0.10), ScanRange(long=0.06, short=0.07)
    perp = perp_margin(im, mm, sigma_1d=0.03, adv_quote=1e8)
    assert (perp.imf, perp.mmf) == (0.10, 0.07)
    # add-on for 1% of ADV: 0.03 * sqrt(0.01) = 0.003
    assert perp.size_addon * math.sqrt(1e6) == pytest.approx(0.003)
    same = haircut(im, mm, horizon=1, collateral_horizon=1)
    assert same.im == pytest.approx(0.08) and same.mm == pytest.approx(0.06)
    four = haircut(im, mm, horizon=1, collateral_horizon=4)
    assert four.im == pytest.approx(1 - 0.92**2)


def test_vol_shock_sources() -> None:
    daily, _ = synthetic_daily(3)
    config = CalibrationConfig()
    from_dvol = calibrate_vol_shock(config, daily["dvol"], daily["rv"])
    changes = np.log(daily["dvol"].shift(-1) / daily["dvol"]).dropna()
    assert from_dvol.source == "dvol"
    assert from_dvol.up == pytest.approx(max(math.expm1(np.quantile(changes, 0.99)), 0.05))
    proxy = calibrate_vol_shock(config, None, daily["rv"], scale=3.0)
    assert proxy.source == "realized_proxy" and proxy.up > 0 and 0 < proxy.down < 1
    default = calibrate_vol_shock(config, None, None)
    assert default.source == "default" and default.up == config.default_vol_shock_up


def test_correlations() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    dates = pd.date_range("2019-01-01", periods=n, freq="D", tz="UTC")
    cov = [[1.0, 0.6], [0.6, 1.0]]
    r = rng.multivariate_normal([0, 0], cov, size=n) * 0.02
    stress = (dates >= "2020-03-01") & (dates <= "2020-03-31")
    r[stress, 1] = r[stress, 0]  # perfectly correlated in the stress window
    frame = pd.DataFrame(r, index=dates, columns=["BTC", "ETH"])
    ewma = ewma_correlation(frame, lam=0.999)
    assert ewma[0, 1] == pytest.approx(0.6, abs=0.08)
    march = {"2020-03": ("2020-03-01", "2020-03-31")}
    assert stressed_correlation(frame, march)[0, 1] == pytest.approx(1.0)
    offsets = calibrate_offsets(frame, CalibrationConfig())
    assert offsets.ewma.symbols == ("BTC", "ETH") and offsets.offset_cap == 0.8


def test_calibrate_underlying_valid_and_no_look_ahead() -> None:
    daily, variance = synthetic_daily(5)
    as_of = daily.index[700].date()
    inputs = UnderlyingInputs("BTC", daily, variance, "har")
    params = calibrate_underlying(inputs, as_of)
    assert params.fallback.used is False
    assert params.scan_mm.long <= params.scan_im.long
    sigma = math.sqrt(variance.iloc[700])
    assert params.sigma == pytest.approx(sigma)
    assert 1.5 * sigma < params.scan_im.long < 4 * sigma
    truncated = UnderlyingInputs("BTC", daily.iloc[:701], variance.iloc[:701], "har")
    assert calibrate_underlying(truncated, as_of) == params


def test_missing_forecast_falls_back_to_previous_then_default() -> None:
    daily, variance = synthetic_daily(6)
    day = daily.index[700].date()
    good = calibrate_underlying(UnderlyingInputs("ETH", daily, variance, "har"), day)
    broken = variance.copy()
    broken.iloc[701] = np.nan
    nxt = day + dt.timedelta(days=1)
    fell = calibrate_underlying(UnderlyingInputs("ETH", daily, broken, "har"), nxt, previous=good)
    assert fell.fallback.source == "previous" and "missing" in (fell.fallback.reason or "")
    assert fell.scan_im == good.scan_im and fell.as_of == nxt
    default = calibrate_underlying(UnderlyingInputs("ETH", daily, None, "har"), nxt)
    assert default.fallback.source == "default" and default.model == "default"
    assert default.scan_im.long == CalibrationConfig().default_scan_im


def test_apc_bounds_are_recorded() -> None:
    daily, variance = synthetic_daily(7)
    day = daily.index[700].date()
    inputs = UnderlyingInputs("SOL", daily, variance, "har")
    first = calibrate_underlying(inputs, day)
    # pretend yesterday's parameters were much higher: the decrease is capped at 10%
    high = first.model_copy(
        update={
            "scan_im": ScanRange(long=0.5, short=0.5),
            "scan_mm": ScanRange(long=0.4, short=0.4),
        }
    )
    capped = calibrate_underlying(inputs, day, apc=ApcConfig(), previous=high)
    assert capped.scan_im.long == pytest.approx(0.45)
    rules = {(b.rule, b.field) for b in capped.apc.bounds_bit}
    assert ("decrease_cap", "scan_im.long") in rules
    floored = calibrate_underlying(inputs, day, apc=ApcConfig(floor=True, max_decrease=None))
    assert floored.scan_im.long >= first.scan_im.long


@settings(max_examples=15, deadline=None)
@given(
    st.integers(0, 10_000),
    st.floats(0.001, 0.3),
    st.floats(1e-8, 50.0),
    st.booleans(),
)
def test_parameters_never_nan_zero_or_negative(
    seed: int, sigma: float, forecast_scale: float, with_dvol: bool
) -> None:
    daily, variance = synthetic_daily(seed, n=400, sigma=sigma, dvol=with_dvol)
    variance = variance * forecast_scale  # badly scaled forecasts still give valid parameters
    config = CalibrationConfig(min_residuals=100)
    params = calibrate_underlying(
        UnderlyingInputs("XRP", daily, variance, "garch"),
        daily.index[-1].date(),
        config,
        ApcConfig.all_on(),
    )
    numbers = [
        params.sigma,
        params.scan_im.long,
        params.scan_im.short,
        params.scan_mm.long,
        params.scan_mm.short,
        params.vol_shock.up,
        params.vol_shock.down,
        params.perp.imf,
        params.perp.mmf,
        params.perp.size_addon,
        params.haircut.im,
        params.haircut.mm,
        *[t.weight for t in params.tails],
    ]
    assert all(math.isfinite(x) and x > 0 for x in numbers)


def test_published_parameters_equal_the_backtested_path() -> None:
    from margin.backtest import BacktestConfig, dynamic_margins

    daily, variance = synthetic_daily(8, n=900)
    apc = ApcConfig.all_on().model_copy(update={"max_decrease": None})
    day = daily.index[850]
    params = calibrate_underlying(
        UnderlyingInputs("BTC", daily, variance, "har"), day.date(), apc=apc
    )
    moves = np.log(daily["close"].shift(-1) / daily["close"])
    path = dynamic_margins(moves, variance, BacktestConfig(apc=apc)).loc[day]
    assert params.scan_im.long == pytest.approx(path["IM_long"], rel=1e-12)
    assert params.scan_im.short == pytest.approx(path["IM_short"], rel=1e-12)
    assert params.scan_mm.long == pytest.approx(path["MM_long"], rel=1e-12)
    assert params.apc.buffer and params.apc.floor and params.apc.stress_weight


def test_calibrated_files_are_byte_identical(tmp_path: Path) -> None:
    from margin import params
    from margin.parameters import ParameterSet, Provenance

    def build() -> ParameterSet:
        underlyings, returns = {}, {}
        for seed, symbol in enumerate(("BTC", "ETH")):
            daily, variance = synthetic_daily(seed, n=700)
            day = daily.index[-1].date()
            underlyings[symbol] = calibrate_underlying(
                UnderlyingInputs(symbol, daily, variance, "garch"), day, apc=ApcConfig.all_on()
            )
            returns[symbol] = np.log(daily["close"]).diff()
        return ParameterSet(
            as_of=day,
            effective_from=params.utc_midnight_after(day),
            horizon_days=1,
            im_confidence=0.99,
            mm_confidence=0.975,
            underlyings=underlyings,
            offsets=calibrate_offsets(pd.DataFrame(returns), CalibrationConfig()),
            provenance=Provenance(model="garch", data_digest="d", code_version="test"),
        )

    root = tmp_path
    a = params.write_parameter_set(build(), root / "a")
    b = params.write_parameter_set(build(), root / "b")
    for name in (params.PARAMS_JSON, params.PARAMS_CSV, params.MANIFEST_JSON):
        assert (a.folder / name).read_bytes() == (b.folder / name).read_bytes()
    assert params.load(root / "a").underlyings["BTC"].apc.floor
