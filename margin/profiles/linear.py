"""Linear perp-DEX margin: dYdX open-interest IMF scaling, Drift size premium, Hyperliquid tiers.

These venues margin each perpetual position on its own notional; what differs is how the
margin fraction grows with size or with the market's open interest. Every function here is
vectorized over positions (numpy broadcasting) and returns requirements as positive USD.

Units: notionals and open interest in USD (quote); sizes in base units (coins); fractions,
ratios and weights as decimals (0.05 = 5 %); leverage as a multiple (20 = 20x).
The formulas are restated in ``docs/methodologies.md`` (section "Linear perp margin").
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, model_validator

from margin.typing import FloatArray, IntArray

__all__ = [
    "DriftMarket",
    "DydxLiquidityTier",
    "HyperliquidMarginTable",
    "HyperliquidTier",
    "drift_perp_margin",
    "drift_size_discount_asset_weight",
    "drift_size_premium_weight",
    "dydx_effective_imf",
    "dydx_margin",
    "hyperliquid_margin",
    "round_up_to_quantum",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def round_up_to_quantum(amount: ArrayLike, quantum: float) -> FloatArray:
    """Round amounts up to a multiple of ``quantum`` (e.g. 1e-6 USDC), ignoring float noise.

    The quotient is first rounded to 9 decimals so that a product that is mathematically an
    integer number of quanta but lands one ulp above it is not rounded up a whole quantum.
    """
    a = np.asarray(amount, dtype=np.float64)
    return np.asarray(np.ceil(np.round(a / quantum, 9)) * quantum, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# dYdX v4: liquidity tiers with open-interest-scaled initial margin
# --------------------------------------------------------------------------------------------


class DydxLiquidityTier(_Frozen):
    """A dYdX liquidity tier: base IMF, maintenance fraction and open-interest caps (USD).

    ``open_interest_upper_cap = 0`` switches the open-interest scaling off.
    """

    initial_margin_fraction: float = Field(ge=0.0, le=1.0, description="base IMF")
    maintenance_fraction: float = Field(ge=0.0, le=1.0, description="MMF as a share of IMF")
    open_interest_lower_cap: float = Field(0.0, ge=0.0)
    open_interest_upper_cap: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _caps_ordered(self) -> DydxLiquidityTier:
        if self.open_interest_lower_cap > self.open_interest_upper_cap:
            raise ValueError("open_interest_lower_cap must not exceed open_interest_upper_cap")
        return self

    @property
    def maintenance_margin_fraction(self) -> float:
        """``MMF = IMF × maintenance fraction`` (independent of open interest)."""
        return self.initial_margin_fraction * self.maintenance_fraction


def dydx_effective_imf(tier: DydxLiquidityTier, open_interest_notional: ArrayLike) -> FloatArray:
    """Open-interest-scaled initial margin fraction.

    ``scale = (OI - lower) / (upper - lower)`` and
    ``IMF_eff = min(IMF + max(scale, 0) (1 - IMF), 1)``; the base IMF when OI <= lower cap or
    the upper cap is 0, and 1 (fully collateralised) once OI reaches the upper cap.
    """
    oi = np.asarray(open_interest_notional, dtype=np.float64)
    imf = tier.initial_margin_fraction
    lower, upper = tier.open_interest_lower_cap, tier.open_interest_upper_cap
    if upper == 0.0:
        return np.full(oi.shape, imf)
    # Equal caps leave no ramp: below or at the cap the base IMF, at or above it 1.
    scale = (oi - lower) / max(upper - lower, np.finfo(np.float64).tiny)
    scaled = np.minimum(imf + np.maximum(scale, 0.0) * (1.0 - imf), 1.0)
    return np.asarray(np.where(oi >= upper, 1.0, np.where(oi <= lower, imf, scaled)))


def dydx_margin(
    tier: DydxLiquidityTier,
    notional: ArrayLike,
    open_interest_notional: ArrayLike = 0.0,
    quantum: float | None = 1e-6,
) -> tuple[FloatArray, FloatArray]:
    """Initial and maintenance requirement of positions of absolute ``notional`` USD.

    IM = ``min(IMF_eff · notional, notional)`` rounded **up** to ``quantum`` (dYdX rounds
    the initial requirement up to the USDC quantum; ``None`` disables rounding);
    MM = ``MMF · notional`` with the base (unscaled) IMF.
    """
    n = np.abs(np.asarray(notional, dtype=np.float64))
    im = dydx_effective_imf(tier, open_interest_notional) * n
    if quantum is not None:
        im = round_up_to_quantum(im, quantum)
    return np.minimum(im, n), n * tier.maintenance_margin_fraction


# --------------------------------------------------------------------------------------------
# Drift v2: size premium on margin ratios and liability weights, size discount on assets
# --------------------------------------------------------------------------------------------


class DriftMarket(_Frozen):
    """Margin ratios of a Drift perp market and its IMF (size-premium) factor."""

    margin_ratio_initial: float = Field(gt=0.0)
    margin_ratio_maintenance: float = Field(gt=0.0)
    imf_factor: float = Field(ge=0.0, description="size premium per sqrt(base unit)")


def drift_size_premium_weight(size: ArrayLike, weight: float, imf_factor: float) -> FloatArray:
    """Liability weight or margin ratio raised with size: ``max(w, 0.8 w + imf sqrt(|size|))``.

    With ``imf_factor = 0`` the weight is unchanged. ``size`` in base units.
    """
    s = np.abs(np.asarray(size, dtype=np.float64))
    if imf_factor == 0.0:
        return np.full(s.shape, weight)
    return np.maximum(weight, 0.8 * weight + imf_factor * np.sqrt(s))


def drift_size_discount_asset_weight(
    size: ArrayLike, weight: float, imf_factor: float
) -> FloatArray:
    """Collateral asset weight cut with size: ``min(w, 1.1 / (1 + imf sqrt(|size|)))``."""
    s = np.abs(np.asarray(size, dtype=np.float64))
    if imf_factor == 0.0:
        return np.full(s.shape, weight)
    return np.minimum(weight, 1.1 / (1.0 + imf_factor * np.sqrt(s)))


def drift_perp_margin(
    market: DriftMarket, size: ArrayLike, price: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Initial and maintenance requirement: ``|size| · price · ratio(size)`` (USD)."""
    s = np.abs(np.asarray(size, dtype=np.float64))
    value = s * np.asarray(price, dtype=np.float64)
    im = value * drift_size_premium_weight(s, market.margin_ratio_initial, market.imf_factor)
    mm = value * drift_size_premium_weight(s, market.margin_ratio_maintenance, market.imf_factor)
    return im, mm


# --------------------------------------------------------------------------------------------
# Hyperliquid: leverage tiers with a maintenance deduction
# --------------------------------------------------------------------------------------------


class HyperliquidTier(_Frozen):
    """Positions with notional from ``lower_bound`` USD up get at most ``max_leverage``."""

    lower_bound: float = Field(ge=0.0)
    max_leverage: float = Field(ge=1.0)


class HyperliquidMarginTable(_Frozen):
    """One asset's margin tiers, the first starting at 0 notional, bounds increasing.

    Maintenance rate of tier ``n``: ``mmr_n = 1 / (2 max_leverage_n)`` (half the IM rate at
    maximum leverage). Deduction: ``d_0 = 0``, ``d_n = d_{n-1} + lower_n (mmr_n - mmr_{n-1})``,
    which makes ``MM = notional · mmr - d`` continuous across tier bounds.
    """

    tiers: tuple[HyperliquidTier, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> HyperliquidMarginTable:
        bounds = [t.lower_bound for t in self.tiers]
        if bounds[0] != 0.0 or any(b >= c for b, c in pairwise(bounds)):
            raise ValueError("tier lower bounds must start at 0 and increase strictly")
        return self

    @property
    def maintenance_rates(self) -> FloatArray:
        """Maintenance margin rate per tier (decimal)."""
        return 1.0 / (2.0 * np.array([t.max_leverage for t in self.tiers]))

    @property
    def deductions(self) -> FloatArray:
        """Maintenance deduction per tier (USD)."""
        bounds = np.array([t.lower_bound for t in self.tiers])
        steps = bounds[1:] * np.diff(self.maintenance_rates)
        return np.concatenate([[0.0], np.cumsum(steps)])

    def tier_index(self, notional: ArrayLike) -> IntArray:
        """Tier of each absolute notional (USD)."""
        bounds = np.array([t.lower_bound for t in self.tiers])
        n = np.abs(np.asarray(notional, dtype=np.float64))
        return np.asarray(np.searchsorted(bounds, n, side="right") - 1, dtype=np.intp)


def hyperliquid_margin(
    table: HyperliquidMarginTable, notional: ArrayLike, leverage: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Initial and maintenance requirement of positions of absolute ``notional`` USD.

    IM = ``notional / min(leverage, tier max leverage)`` (a user's leverage above the tier's
    maximum is capped, as the venue does when the position grows into a higher tier);
    MM = ``notional · mmr_tier − deduction_tier``.
    """
    n = np.abs(np.asarray(notional, dtype=np.float64))
    tier = table.tier_index(n)
    max_leverage = np.array([t.max_leverage for t in table.tiers])[tier]
    lev = np.asarray(leverage, dtype=np.float64)
    if np.any(lev < 1.0):
        raise ValueError("leverage must be at least 1")
    im = n / np.minimum(lev, max_leverage)
    mm = n * table.maintenance_rates[tier] - table.deductions[tier]
    return np.asarray(im, dtype=np.float64), np.asarray(mm, dtype=np.float64)
