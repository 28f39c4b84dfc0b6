"""Linear perp-DEX profiles against numbers the venues published in their own test suites.

dYdX: dydxprotocol/v4-chain, protocol/x/perpetuals/types/liquidity_tier_test.go (amounts in
quote quantums, so the rounding quantum is 1). Drift: drift-labs/protocol-v2,
programs/drift/src/math/margin/tests.rs (weights in units of 1e-4, truncated as on chain).
Hyperliquid: the margin-tiers documentation (formula) with hand-checked arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from margin.profiles.linear import (
    DriftMarket,
    DydxLiquidityTier,
    HyperliquidMarginTable,
    HyperliquidTier,
    drift_perp_margin,
    drift_size_discount_asset_weight,
    drift_size_premium_weight,
    dydx_effective_imf,
    dydx_margin,
    hyperliquid_margin,
)

# ---------------------------------------------------------------------------------------------
# dYdX
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("imf_ppm", "lower", "upper", "open_interest", "quote", "expected"),
    [
        (200_000, 0, 0, 0, 500_000, 100_000),
        (500_000, 0, 0, 0, 1_000_000, 500_000),
        (100_000, 0, 0, 0, 1, 1),  # 0.1 rounds up to 1
        (567_243, 0, 0, 0, 123_456, 70_030),  # 70_029.55 rounds up
        (200_000, 0, 0, 1_500_000_000_000, 500_000, 100_000),  # no caps: no scaling
        (200_000, 1_000_000_000_000, 2_000_000_000_000, 1_500_000_000_000, 500_000, 300_000),
        (200_000, 25_000_000_000_000, 50_000_000_000_000, 80_000_000_000_000, 500_000, 500_000),
        (200_000, 25_000_000_000_000, 50_000_000_000_000, 25_000_000_000_000, 500_000, 100_000),
        (200_000, 25_000_000_000_000, 60_000_000_000_000, 28_123_456_789_123, 500_000, 135_697),
    ],
)
def test_dydx_initial_margin_matches_published_cases(
    imf_ppm: int, lower: int, upper: int, open_interest: int, quote: int, expected: int
) -> None:
    tier = DydxLiquidityTier(
        initial_margin_fraction=imf_ppm / 1e6,
        maintenance_fraction=1.0,
        open_interest_lower_cap=lower,
        open_interest_upper_cap=upper,
    )
    im, _ = dydx_margin(tier, quote, open_interest, quantum=1.0)
    assert im == expected


@pytest.mark.parametrize(
    ("open_interest", "expected_ppm"),
    [
        (0, 200_000),
        (1_500_000, 600_000),
        (1_234_567, 387_653),
        (1_000_000, 200_000),
        (2_000_000, 1_000_000),
        (2_500_000, 1_000_000),
    ],
)
def test_dydx_effective_imf_matches_published_ppm(open_interest: int, expected_ppm: int) -> None:
    """Caps 1M / 2M, base IMF 20 %."""
    tier = DydxLiquidityTier(
        initial_margin_fraction=0.2,
        maintenance_fraction=1.0,
        open_interest_lower_cap=1_000_000,
        open_interest_upper_cap=2_000_000,
    )
    # dYdX truncates the adjusted fraction to whole ppm.
    assert np.floor(dydx_effective_imf(tier, open_interest) * 1e6 + 1e-6) == expected_ppm


def test_dydx_no_upper_cap_means_no_increase() -> None:
    tier = DydxLiquidityTier(initial_margin_fraction=0.2, maintenance_fraction=1.0)
    assert dydx_effective_imf(tier, 1_500_000) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("imf", "fraction", "expected_mmf"),
    [
        (0.15, 0.80, 0.12),
        (0.45, 0.77, 0.3465),
        (1.0, 1.0, 1.0),
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 0.0),
        (1.0, 0.0, 0.0),
    ],
)
def test_dydx_maintenance_fraction(imf: float, fraction: float, expected_mmf: float) -> None:
    tier = DydxLiquidityTier(initial_margin_fraction=imf, maintenance_fraction=fraction)
    assert tier.maintenance_margin_fraction == pytest.approx(expected_mmf, abs=1e-12)
    _, mm = dydx_margin(tier, 10_000.0, quantum=None)
    assert mm == pytest.approx(10_000.0 * expected_mmf)


def test_dydx_rejects_inverted_caps() -> None:
    with pytest.raises(ValidationError, match="must not exceed"):
        DydxLiquidityTier(
            initial_margin_fraction=0.15,
            maintenance_fraction=0.8,
            open_interest_lower_cap=1_000_000,
            open_interest_upper_cap=500_000,
        )


@given(st.floats(0.0, 5e7), st.floats(0.0, 5e7))
def test_dydx_imf_is_monotone_in_open_interest(a: float, b: float) -> None:
    tier = DydxLiquidityTier(
        initial_margin_fraction=0.05,
        maintenance_fraction=0.6,
        open_interest_lower_cap=1e7,
        open_interest_upper_cap=3e7,
    )
    lo, hi = sorted((a, b))
    imf_lo, imf_hi = dydx_effective_imf(tier, [lo, hi])
    assert 0.05 <= imf_lo <= imf_hi <= 1.0


# ---------------------------------------------------------------------------------------------
# Drift
# ---------------------------------------------------------------------------------------------


def _bps(weight: np.ndarray) -> int:
    """Weight in Drift's 1e-4 units, truncated as the program does."""
    return int(np.floor(float(weight) * 1e4 + 1e-9))


@pytest.mark.parametrize(
    ("size", "weight", "imf", "expected"),
    [
        (1_000, 1.1, 0.0, 11_000),
        (1_000, 1.1, 0.00001, 11_000),  # premium below the base weight
        (1_000, 1.1, 0.01, 11_962),
        (1_000, 1.1, 0.1, 40_422),
        (1_000, 0.0, 0.1, 31_622),  # maintenance weight 0: premium only
    ],
)
def test_drift_liability_weight_matches_published(
    size: float, weight: float, imf: float, expected: int
) -> None:
    assert _bps(drift_size_premium_weight(size, weight, imf)) == expected


@pytest.mark.parametrize(
    ("size", "weight", "imf", "expected"),
    [
        (1_000, 0.9, 0.0, 9_000),
        (1_000, 0.9, 0.00001, 9_000),
        (1_000_000_000, 0.9, 0.00001, 8_357),
        (1_000, 0.9, 0.01, 8_357),
        (1_000, 0.9, 0.1, 2_642),
        (100_000, 0.15, 0.1, 337),
        (100_000, 0.75, 0.1, 337),
    ],
)
def test_drift_asset_weight_matches_published(
    size: float, weight: float, imf: float, expected: int
) -> None:
    assert _bps(drift_size_discount_asset_weight(size, weight, imf)) == expected


def test_drift_perp_margin_by_hand() -> None:
    """10 % / 5 % ratios, imf 0.001: premium binds only for large sizes."""
    market = DriftMarket(margin_ratio_initial=0.10, margin_ratio_maintenance=0.05, imf_factor=0.001)
    im, mm = drift_perp_margin(market, [-4.0, 40_000.0], [20_000.0, 20_000.0])
    # size 4: 0.08 + 0.001 * 2 = 0.082 < 0.10 -> base ratio
    assert im[0] == pytest.approx(4 * 20_000 * 0.10)
    assert mm[0] == pytest.approx(4 * 20_000 * 0.05)
    # size 40,000: sqrt = 200 -> 0.08 + 0.2 = 0.28 (IM), 0.04 + 0.2 = 0.24 (MM)
    assert im[1] == pytest.approx(40_000 * 20_000 * 0.28)
    assert mm[1] == pytest.approx(40_000 * 20_000 * 0.24)


# ---------------------------------------------------------------------------------------------
# Hyperliquid
# ---------------------------------------------------------------------------------------------

BTC = HyperliquidMarginTable(
    tiers=(
        HyperliquidTier(lower_bound=0.0, max_leverage=40.0),
        HyperliquidTier(lower_bound=150e6, max_leverage=20.0),
    )
)


def test_hyperliquid_btc_table_by_hand() -> None:
    np.testing.assert_allclose(BTC.maintenance_rates, [0.0125, 0.025])
    np.testing.assert_allclose(BTC.deductions, [0.0, 1.875e6])
    im, mm = hyperliquid_margin(BTC, [100e6, 150e6, 200e6], [40.0, 40.0, 10.0])
    np.testing.assert_allclose(mm, [1.25e6, 1.875e6, 3.125e6])
    # 40x is capped at 20x in the second tier; 10x stays 10x.
    np.testing.assert_allclose(im, [2.5e6, 7.5e6, 20e6])


@given(st.floats(1.0, 1e9))
def test_hyperliquid_maintenance_is_continuous_and_increasing(notional: float) -> None:
    table = HyperliquidMarginTable(
        tiers=(
            HyperliquidTier(lower_bound=0.0, max_leverage=10.0),
            HyperliquidTier(lower_bound=3e6, max_leverage=5.0),
            HyperliquidTier(lower_bound=2e7, max_leverage=3.0),
        )
    )
    _, mm = hyperliquid_margin(table, [notional * (1 - 1e-9), notional], 1.0)
    assert mm[1] >= mm[0] - 1e-6
    assert mm[1] - mm[0] <= notional * 1e-9 + 1e-6  # no jump at a tier bound


def test_hyperliquid_rejects_unordered_tiers() -> None:
    with pytest.raises(ValidationError, match="start at 0 and increase"):
        HyperliquidMarginTable(
            tiers=(
                HyperliquidTier(lower_bound=0.0, max_leverage=10.0),
                HyperliquidTier(lower_bound=0.0, max_leverage=5.0),
            )
        )
