"""Derive's portfolio margin risk manager, version 2 (``PMRM_2``), as a vectorized profile.

One underlying per book: every account holds cash, one perpetual position, options grouped
by expiry and collateral assets (some of them *risk-cancelling*, i.e. shocked with spot).
The market is valued once: every option in every scenario in one Black-76 call on a
(grid rows × options) grid, the risk array. The value of every held (account, expiry) pair
in every row is then one sparse product; the static discount by sign of that value splits
into a linear part and a part on its positive side, each summed per account with one more
sparse product, so only the skew ``-|.|`` is finished per pair. Accounts without options
skip all of it. A single portfolio is a book of one account.

Signs follow Derive: ``im`` and ``mm`` are *collateral value minus requirement*, so a
negative figure is the amount by which the account is short of margin.

Units
-----
- Prices, values and contingencies are in the stable (quote) currency.
- Times to expiry are **seconds** at the boundary and **years** (ACT/365) inside.
- Volatilities, rates, shocks, haircuts and percentages are **decimals** (0.5 = 50 %).
- A scenario's ``spot_shock`` is a price **multiplier** (1.18 = spot up 18 %).

The formulas are restated in ``docs/methodologies.md`` (section "Derive PMRM_2").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, model_validator

from margin.pricing import black76_price
from margin.typing import BoolArray, FloatArray, IntArray

__all__ = [
    "SECONDS_PER_DAY",
    "SECONDS_PER_YEAR",
    "SETTLEMENT_TWAP_SECONDS",
    "AccountFigures",
    "BasisContingencyParameters",
    "CollateralParameters",
    "ContingencyParameters",
    "DeriveAccounts",
    "DeriveBookMargin",
    "DeriveMarginResult",
    "DeriveMarket",
    "DerivePMRM2Parameters",
    "DerivePortfolio",
    "DeriveScenario",
    "ExpiryFeeds",
    "MarginParameters",
    "MarketValuation",
    "OptionSeries",
    "SkewShock",
    "SkewShockParameters",
    "VolShock",
    "VolShockParameters",
    "account_figures",
    "basis_contingency",
    "depeg_im_factor",
    "derive_pmrm2_book_margin",
    "derive_pmrm2_margin",
    "naked_shorts_per_expiry",
    "oracle_contingency",
    "settlement_forward_portions",
    "skew_shock",
    "static_discounts",
    "value_market",
    "vol_shock_multipliers",
    "year_fraction",
]

SECONDS_PER_DAY = 86_400
#: Derive annualises with a 365-day year.
SECONDS_PER_YEAR = 365 * SECONDS_PER_DAY
#: Length of the settlement TWAP window: inside it part of the settlement price is known.
SETTLEMENT_TWAP_SECONDS = 30 * 60
#: Expiries up to this many seconds away use the short-term vol-shock power.
_SHORT_TERM_SECONDS = 30 * SECONDS_PER_DAY


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VolShock(StrEnum):
    """How a scenario moves implied volatility."""

    UP = "up"
    DOWN = "down"
    NONE = "none"
    LINEAR = "linear"  # skew scenario: wings moved with signed log-moneyness
    ABS = "abs"  # skew scenario: wings moved with absolute log-moneyness

    @property
    def is_skew(self) -> bool:
        """True for the two skew scenarios (spot unchanged, per-strike vol multipliers)."""
        return self in (VolShock.LINEAR, VolShock.ABS)


class DeriveScenario(_Frozen):
    """One stress scenario: spot multiplier, vol-shock direction and P&L dampening factor."""

    spot_shock: float = Field(gt=0.0, description="spot multiplier (1.18 = +18 %)")
    vol_shock: VolShock
    dampening: float = Field(ge=0.0, description="weight applied to the scenario P&L")


class VolShockParameters(_Frozen):
    """Term-structure vol shocks: ``mult = (30 d / max(T, dte_floor)) ** power``."""

    vol_range_up: float = Field(ge=0.0)
    vol_range_down: float = Field(ge=0.0)
    short_term_power: float = Field(description="power for expiries within 30 days")
    long_term_power: float = Field(description="power for expiries beyond 30 days")
    dte_floor_days: float = Field(ge=0.0, description="floor on time to expiry, days")
    min_vol_up_shock: float = Field(ge=0.0, description="floor on a vol-up shocked vol")


class MarginParameters(_Frozen):
    """Loss factors and the static discounts on shocked expiry values."""

    im_factor: float = Field(gt=0.0)
    mm_factor: float = Field(gt=0.0)
    long_base_static_discount: float = Field(ge=0.0, description="applied to V >= 0")
    short_base_static_discount: float = Field(ge=0.0, description="applied to V < 0")
    long_rate_mult_scale: float = Field(ge=0.0)
    long_rate_add_scale: float = Field(ge=0.0)
    short_rate_mult_scale: float = Field(ge=0.0)
    short_rate_add_scale: float = Field(ge=0.0)


class BasisContingencyParameters(_Frozen):
    """Forward (basis) contingency: spot moves with vol unchanged, scaled by expiry."""

    spot_up: float = Field(gt=1.0)
    spot_down: float = Field(gt=0.0, lt=1.0)
    add_factor: float = Field(ge=0.0)
    mult_factor: float = Field(ge=0.0, description="per year of time to expiry")


class ContingencyParameters(_Frozen):
    """Perp, option, de-peg and oracle-confidence add-ons.

    The ``im_*`` percentages are *in addition to* the ``mm_*`` ones (IM total = MM + IM).
    """

    peg_loss_threshold: float = Field(ge=0.0)
    peg_loss_factor: float = Field(ge=0.0)
    confidence_threshold: float = Field(ge=0.0, le=1.0)
    confidence_margin: float = Field(ge=0.0)
    mm_perp_percent: float = Field(ge=0.0)
    im_perp_percent: float = Field(ge=0.0)
    mm_option_percent: float = Field(ge=0.0)
    im_option_percent: float = Field(ge=0.0)


class SkewShockParameters(_Frozen):
    """The two skew scenarios' caps and the width ``k*`` at which the multiplier saturates."""

    linear_base_cap: float = Field(ge=0.0)
    linear_c_base: float
    abs_base_cap: float = Field(ge=0.0)
    abs_c_base: float
    min_k_star: float = Field(ge=0.0)
    width_scale: float = Field(ge=0.0)
    vol_param_static: float = Field(ge=0.0)
    vol_param_scale: float


class CollateralParameters(_Frozen):
    """Haircuts of one collateral asset (the IM haircut is added to the MM one)."""

    mm_haircut: float = Field(ge=0.0, le=1.0)
    im_haircut: float = Field(ge=0.0, le=1.0)
    risk_cancelling: bool = Field(description="shocked with spot in every scenario")


class DerivePMRM2Parameters(_Frozen):
    """Every parameter of the PMRM_2 methodology for one underlying."""

    scenarios: tuple[DeriveScenario, ...] = Field(min_length=1)
    vol_shock: VolShockParameters
    margin: MarginParameters
    basis: BasisContingencyParameters
    contingency: ContingencyParameters
    skew: SkewShockParameters
    collaterals: dict[str, CollateralParameters] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _skew_scenarios_keep_spot(self) -> DerivePMRM2Parameters:
        for i, s in enumerate(self.scenarios):
            if s.vol_shock.is_skew and s.spot_shock != 1.0:
                raise ValueError(f"scenario {i}: a skew scenario must have spot_shock 1")
        return self


# --------------------------------------------------------------------------------------------
# Market and accounts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryFeeds:
    """Market data per expiry (arrays of equal length ``n_exp``).

    ``forward_variable * spot_shock + forward_fixed`` is the forward in a scenario; the fixed
    part is the share of the settlement price already observed (see
    :func:`settlement_forward_portions`). ``confidence`` is the lowest of the forward, rate
    and vol-surface oracle confidences of the expiry.
    """

    seconds_to_expiry: FloatArray
    forward_variable: FloatArray
    forward_fixed: FloatArray
    rate: FloatArray
    confidence: FloatArray

    @property
    def forward(self) -> FloatArray:
        """Unshocked forward price."""
        return self.forward_variable + self.forward_fixed


@dataclass(frozen=True)
class OptionSeries:
    """The options accounts may hold (arrays of length ``n_opt``).

    ``expiry`` indexes :class:`ExpiryFeeds`; ``vol`` is the mark vol (annualised decimal).
    """

    expiry: IntArray
    strike: FloatArray
    is_call: BoolArray
    vol: FloatArray


@dataclass(frozen=True)
class DeriveMarket:
    """Market snapshot of one underlying shared by every account.

    Collateral assets are listed by ``collateral_names`` (keys of the parameters'
    ``collaterals``) with their USD price and oracle confidence.
    """

    spot: float
    spot_confidence: float
    stable_price: float
    perp_price: float
    perp_confidence: float
    expiries: ExpiryFeeds
    options: OptionSeries
    collateral_names: tuple[str, ...]
    collateral_price: FloatArray
    collateral_confidence: FloatArray


@dataclass(frozen=True)
class DeriveAccounts:
    """Holdings of ``n`` accounts: cash, perp, options (sparse) and collateral amounts.

    ``options`` is ``n × n_opt`` (signed units), ``collateral`` is ``n × n_coll`` (asset units);
    ``perp_unrealised`` is unsettled funding plus unrealised perp P&L (USD).
    """

    cash: FloatArray
    perp_position: FloatArray
    perp_unrealised: FloatArray
    options: sp.csr_matrix
    collateral: FloatArray

    @property
    def n_accounts(self) -> int:
        """Number of accounts."""
        return int(self.cash.size)

    def rows(self, start: int, stop: int) -> DeriveAccounts:
        """The accounts ``start:stop`` (a view where numpy allows)."""
        return DeriveAccounts(
            cash=self.cash[start:stop],
            perp_position=self.perp_position[start:stop],
            perp_unrealised=self.perp_unrealised[start:stop],
            options=sp.csr_matrix(self.options[start:stop]),
            collateral=self.collateral[start:stop],
        )


@dataclass(frozen=True)
class DerivePortfolio:
    """One account of one underlying with its market snapshot."""

    market: DeriveMarket
    cash: float
    perp_position: float
    perp_unrealised: float
    option_amount: FloatArray
    collateral_amount: FloatArray

    def as_accounts(self) -> DeriveAccounts:
        """This portfolio as a book of one account."""
        return DeriveAccounts(
            cash=np.array([self.cash]),
            perp_position=np.array([self.perp_position]),
            perp_unrealised=np.array([self.perp_unrealised]),
            options=sp.csr_matrix(self.option_amount.reshape(1, -1)),
            collateral=self.collateral_amount.reshape(1, -1),
        )


def settlement_forward_portions(
    forward: ArrayLike,
    seconds_to_expiry: ArrayLike,
    window_seconds: float = SETTLEMENT_TWAP_SECONDS,
) -> tuple[FloatArray, FloatArray]:
    """Split forwards into (variable, fixed) parts inside the settlement TWAP window.

    Options settle on a time-weighted average over the last ``window_seconds``; once the
    window has started, the elapsed share of it is already fixed and does not move with
    spot. Outside the window the whole forward is variable.

    Returns
    -------
    variable, fixed : ndarray
        ``variable + fixed == forward``; ``fixed = forward * (window - T) / window`` for
        ``T < window`` (``T`` in seconds), 0 otherwise.
    """
    f = np.asarray(forward, dtype=np.float64)
    t = np.asarray(seconds_to_expiry, dtype=np.float64)
    share_variable = np.where(t < window_seconds, np.clip(t, 0.0, None) / window_seconds, 1.0)
    fixed = f * (1.0 - share_variable)
    return f * share_variable, fixed


# --------------------------------------------------------------------------------------------
# Components (each one a small vectorized function)
# --------------------------------------------------------------------------------------------


def year_fraction(seconds: FloatArray) -> FloatArray:
    """Seconds to expiry (negative = expired) → years, floored at 0."""
    return np.clip(np.asarray(seconds, dtype=np.float64), 0.0, None) / SECONDS_PER_YEAR


def vol_shock_multipliers(
    seconds_to_expiry: FloatArray, params: VolShockParameters
) -> tuple[FloatArray, FloatArray]:
    """Vol-up and vol-down multipliers per expiry.

    ``m = (30 days / max(T, dte_floor)) ** p`` with ``p`` the short-term power when
    ``T <= 30 days`` and the long-term power otherwise; up = ``1 + range_up * m``,
    down = ``max(0, 1 - range_down * m)``.
    """
    t = np.clip(np.asarray(seconds_to_expiry, dtype=np.float64), 0.0, None)
    floor_seconds = params.dte_floor_days * SECONDS_PER_DAY
    ratio = _SHORT_TERM_SECONDS / np.maximum(t, max(floor_seconds, 1.0))
    power = np.where(t <= _SHORT_TERM_SECONDS, params.short_term_power, params.long_term_power)
    mult = ratio**power
    up = 1.0 + params.vol_range_up * mult
    down = np.maximum(0.0, 1.0 - params.vol_range_down * mult)
    return up, down


def static_discounts(
    rate: FloatArray, tau: FloatArray, params: MarginParameters
) -> tuple[FloatArray, FloatArray]:
    """Static discounts applied to a shocked expiry value: (positive values, negative values).

    ``pos = long_base * exp(-tau (r long_mult + long_add))``;
    ``neg = min(1 / exp(-r tau), short_base / exp(-tau (r short_mult + short_add)))``, so a
    short expiry is marked up but never by more than undoing its own discounting.
    """
    pos = params.long_base_static_discount * np.exp(
        -tau * (rate * params.long_rate_mult_scale + params.long_rate_add_scale)
    )
    neg = params.short_base_static_discount / np.exp(
        -tau * (rate * params.short_rate_mult_scale + params.short_rate_add_scale)
    )
    return pos, np.minimum(1.0 / np.exp(-rate * tau), neg)


@dataclass(frozen=True)
class SkewShock:
    """Per-option figures of one skew scenario (arrays of length ``n_opt``)."""

    log_moneyness: FloatArray
    cap: FloatArray
    k_star: FloatArray
    multiplier: FloatArray  # 1 + clamp(k cap / k*, -cap, cap), before the floor at 0


def skew_shock(
    strike: FloatArray,
    forward: FloatArray,
    tau: FloatArray,
    kind: VolShock,
    params: SkewShockParameters,
) -> SkewShock:
    """Vol multipliers of a skew scenario (``forward`` and ``tau`` given per option).

    ``k = ln(K / F)`` (``|k|`` for ABS); ``cap = c_base sqrt(tau) + base_cap``;
    ``k* = max(min_k*, width sqrt(tau) (static + scale sqrt(tau)))``;
    multiplier ``= 1 + clamp(k cap / k*, -cap, cap)``.
    """
    sqrt_tau = np.sqrt(tau)
    k = np.log(strike / forward)
    if kind is VolShock.ABS:
        k = np.abs(k)
        cap = params.abs_c_base * sqrt_tau + params.abs_base_cap
    elif kind is VolShock.LINEAR:
        cap = params.linear_c_base * sqrt_tau + params.linear_base_cap
    else:
        raise ValueError(f"skew shock needs a LINEAR or ABS scenario, got {kind.value!r}")
    vol_param = params.vol_param_static + params.vol_param_scale * sqrt_tau
    k_star = np.maximum(params.min_k_star, params.width_scale * sqrt_tau * vol_param)
    raw = k * cap / k_star
    multiplier = 1.0 + np.where(k >= 0.0, np.minimum(cap, raw), np.maximum(-cap, raw))
    return SkewShock(log_moneyness=k, cap=cap, k_star=k_star, multiplier=multiplier)


def basis_contingency(
    mark: FloatArray,
    up: FloatArray,
    down: FloatArray,
    tau: FloatArray,
    params: BasisContingencyParameters,
) -> FloatArray:
    """Forward contingency of expiry holdings: ``min(0, V(up) - V, V(down) - V) (add + mult tau)``.

    Element-wise over expiry values (an account's contingency is the sum over its expiries).
    ``V(up)`` / ``V(down)`` are the values with spot moved by the basis shocks and vol
    unchanged; no static discount applies. The result is ``<= 0`` and is the starting point
    of the worst-scenario search.
    """
    loss = np.minimum(np.minimum(up - mark, down - mark), 0.0)
    return np.asarray(loss * (params.add_factor + params.mult_factor * tau), dtype=np.float64)


def naked_shorts_per_expiry(
    positions: sp.csr_matrix, options: OptionSeries, n_expiries: int
) -> FloatArray:
    """Short option units per account and expiry not offset by a long at the same strike.

    Calls and puts at one strike are pooled: each strike contributes ``max(0, -net amount)``.
    ``positions`` is accounts × options; the result is (accounts, expiries).
    """
    n_acct, n_opt = positions.shape
    if n_opt == 0:
        return np.zeros((n_acct, n_expiries))
    by_strike, strike_expiry = _strike_groups(options)
    by_expiry = sp.csr_matrix(
        (np.ones(strike_expiry.size), (np.arange(strike_expiry.size), strike_expiry)),
        shape=(strike_expiry.size, n_expiries),
    )
    naked = (-(positions @ by_strike)).maximum(0)
    return np.asarray((naked @ by_expiry).toarray(), dtype=np.float64)


def _strike_groups(options: OptionSeries) -> tuple[sp.csr_matrix, IntArray]:
    """Options × (expiry, strike) groups indicator and the expiry of each group."""
    n_opt = options.strike.size
    keys = np.stack([options.expiry.astype(np.float64), options.strike], axis=1)
    strikes, group = np.unique(keys, axis=0, return_inverse=True)
    by_strike = sp.csr_matrix(
        (np.ones(n_opt), (np.arange(n_opt), group.ravel())), shape=(n_opt, len(strikes))
    )
    return by_strike, strikes[:, 0].astype(np.intp)


def _naked_shorts(positions: sp.csr_matrix, options: OptionSeries) -> FloatArray:
    """Naked short units per account summed over expiries (see :func:`naked_shorts_per_expiry`)."""
    if positions.shape[1] == 0:
        return np.zeros(positions.shape[0])
    naked = (-(positions @ _strike_groups(options)[0])).maximum(0)
    return np.asarray(naked.sum(axis=1), dtype=np.float64).ravel()


def oracle_contingency(
    confidence: FloatArray, notional: FloatArray, params: ContingencyParameters
) -> FloatArray:
    """IM add-on for stale or uncertain oracles: ``(1 - conf) conf_margin notional`` below
    the confidence threshold, 0 otherwise (element-wise)."""
    low = confidence < params.confidence_threshold
    return np.where(low, (1.0 - confidence) * params.confidence_margin * notional, 0.0)


def depeg_im_factor(
    stable_price: float, margin: MarginParameters, params: ContingencyParameters
) -> float:
    """IM loss factor raised when the stablecoin trades below the peg threshold."""
    shortfall = max(0.0, params.peg_loss_threshold - stable_price)
    return margin.im_factor + shortfall * params.peg_loss_factor


# --------------------------------------------------------------------------------------------
# Market valuation: one risk array for every account
# --------------------------------------------------------------------------------------------

#: Rows of the valuation grid before the margin scenarios: mark, basis up, basis down.
_MARK, _BASIS_UP, _BASIS_DOWN, _FIRST_SCENARIO = 0, 1, 2, 3


@dataclass(frozen=True)
class MarketValuation:
    """Everything about the market that does not depend on holdings.

    ``price_row_opt`` holds the Black-76 value of one unit of every option in every grid row:
    row 0 at the mark, rows 1-2 in the basis scenarios (vol unchanged), then one row per
    margin scenario in the order of ``params.scenarios``.
    """

    tau_exp: FloatArray
    rate_exp: FloatArray
    vol_up_exp: FloatArray
    vol_down_exp: FloatArray
    static_discount_pos: FloatArray
    static_discount_neg: FloatArray
    skew: dict[VolShock, SkewShock]
    price_row_opt: FloatArray
    spot_shock: FloatArray
    dampening: FloatArray
    is_skew: BoolArray


def value_market(market: DeriveMarket, params: DerivePMRM2Parameters) -> MarketValuation:
    """Shocks, discounts and the (rows × options) price grid of one market snapshot."""
    exp, opt = market.expiries, market.options
    tau_exp = year_fraction(exp.seconds_to_expiry)
    rate_exp = np.maximum(exp.rate, 0.0)  # negative rates are floored for all discounting
    up_exp, down_exp = vol_shock_multipliers(exp.seconds_to_expiry, params.vol_shock)
    disc_pos, disc_neg = static_discounts(rate_exp, tau_exp, params.margin)
    fwd_opt, tau_opt = exp.forward[opt.expiry], tau_exp[opt.expiry]
    skew = {
        kind: skew_shock(opt.strike, fwd_opt, tau_opt, kind, params.skew)
        for kind in (VolShock.LINEAR, VolShock.ABS)
    }
    vol_by_kind = {
        VolShock.UP: np.maximum(params.vol_shock.min_vol_up_shock, opt.vol * up_exp[opt.expiry]),
        VolShock.DOWN: opt.vol * down_exp[opt.expiry],
        VolShock.NONE: opt.vol,
        **{kind: opt.vol * np.maximum(s.multiplier, 0.0) for kind, s in skew.items()},
    }
    scenarios = params.scenarios
    spot_shock = np.array([s.spot_shock for s in scenarios])
    kinds = (VolShock.NONE,) * 3 + tuple(s.vol_shock for s in scenarios)
    row_shock = np.concatenate([[1.0, params.basis.spot_up, params.basis.spot_down], spot_shock])
    # Skew scenarios have spot_shock 1 (validated), so one forward formula serves every row.
    fwd_row_exp = np.outer(row_shock, exp.forward_variable) + exp.forward_fixed
    vol_row_opt = np.stack([vol_by_kind[k] for k in kinds]).reshape(len(kinds), opt.vol.size)
    price = black76_price(
        fwd_row_exp[:, opt.expiry],
        opt.strike,
        tau_opt,
        vol_row_opt,
        rate_exp[opt.expiry],
        opt.is_call,
    )
    return MarketValuation(
        tau_exp=tau_exp,
        rate_exp=rate_exp,
        vol_up_exp=up_exp,
        vol_down_exp=down_exp,
        static_discount_pos=disc_pos,
        static_discount_neg=disc_neg,
        skew=skew,
        price_row_opt=np.asarray(price, dtype=np.float64).reshape(len(kinds), opt.vol.size),
        spot_shock=spot_shock,
        dampening=np.array([s.dampening for s in scenarios]),
        is_skew=np.array([s.vol_shock.is_skew for s in scenarios], dtype=bool),
    )


# --------------------------------------------------------------------------------------------
# Accounts: scenario P&L and add-ons
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountFigures:
    """Per-account intermediate figures (first axis: accounts; USD)."""

    mtm_acct_exp: FloatArray
    basis_acct: FloatArray
    pnl_acct_scen: FloatArray
    collateral_acct_coll: FloatArray
    mtm_acct: FloatArray
    mm_perp: FloatArray
    im_perp: FloatArray
    mm_option: FloatArray
    im_option: FloatArray
    mm_collateral: FloatArray
    im_collateral: FloatArray
    oracle: FloatArray


def account_figures(
    market: DeriveMarket,
    accounts: DeriveAccounts,
    params: DerivePMRM2Parameters,
    valuation: MarketValuation,
) -> AccountFigures:
    """MTM, basis contingency, scenario P&L and add-ons of every account."""
    _check_shapes(market, accounts)
    mtm_acct_exp, basis_acct, holders, pnl_holder_scen = _option_pnl(
        market, accounts, params, valuation
    )
    coll_params = [_collateral_params(params, name) for name in market.collateral_names]
    coll_value = accounts.collateral * (market.collateral_price / market.stable_price)
    risk_cancelling = np.array([c.risk_cancelling for c in coll_params], dtype=bool)
    exposure = accounts.perp_position * market.perp_price + coll_value[:, risk_cancelling].sum(1)
    pnl_acct_scen = np.outer(exposure, (valuation.spot_shock - 1.0) * valuation.dampening)
    pnl_acct_scen[holders] += pnl_holder_scen
    mtm = accounts.perp_unrealised + mtm_acct_exp.sum(axis=1) + coll_value.sum(axis=1)

    cp, spot = params.contingency, market.spot
    perp_notional = np.abs(accounts.perp_position) * spot
    naked_notional = _naked_shorts(accounts.options, market.options) * spot
    mm_haircut = np.array([c.mm_haircut for c in coll_params])
    im_haircut = np.array([c.im_haircut for c in coll_params])
    return AccountFigures(
        mtm_acct_exp=mtm_acct_exp,
        basis_acct=basis_acct,
        pnl_acct_scen=pnl_acct_scen,
        collateral_acct_coll=coll_value,
        mtm_acct=mtm,
        mm_perp=perp_notional * cp.mm_perp_percent,
        im_perp=perp_notional * cp.im_perp_percent,
        mm_option=naked_notional * cp.mm_option_percent,
        im_option=naked_notional * cp.im_option_percent,
        mm_collateral=coll_value @ mm_haircut,
        im_collateral=coll_value @ im_haircut,
        oracle=_oracle(market, accounts, cp, coll_value),
    )


def _option_pnl(
    market: DeriveMarket,
    accounts: DeriveAccounts,
    params: DerivePMRM2Parameters,
    val: MarketValuation,
) -> tuple[FloatArray, FloatArray, IntArray, FloatArray]:
    """Per-expiry MTM, basis contingency and option scenario P&L of the accounts.

    Work is done per held (account, expiry) pair, not per account × expiry: the pair's value
    ``V`` in every grid row is one sparse product (pairs × options times options × rows).
    Scenario P&L per pair is ``(D(V) V - V_mark) d`` with ``D`` the static discount for the
    sign of ``V``. Since ``D(V) V = neg V + (pos - neg) max(V, 0)``, the per-account sums are
    two sparse products (pairs weighted by ``neg`` and by ``pos - neg`` of their expiry) of
    ``V`` and of ``max(V, 0)``; only the skew scenarios, where each expiry counts as a loss
    (``-|.|``, standing for a rotation of the skew the other way), are finished per pair.

    Returns
    -------
    mtm_acct_exp, basis_acct : ndarray
        Option MTM per account and expiry, basis contingency per account.
    holders, pnl_holder_scen : ndarray
        The accounts holding options (sorted) and their option P&L per scenario; accounts
        without options have zero option P&L and cost nothing here.
    """
    n_acct, n_exp = accounts.n_accounts, market.expiries.seconds_to_expiry.size
    mtm_acct_exp = np.zeros((n_acct, n_exp))
    basis_acct = np.zeros(n_acct)
    pairs = _expiry_pairs(accounts.options, market.options.expiry, n_exp)
    if pairs is None:
        return mtm_acct_exp, basis_acct, np.zeros(0, np.intp), np.zeros((0, val.spot_shock.size))
    acct, exp, quantity = pairs
    value_pair_row = np.asarray(quantity @ np.ascontiguousarray(val.price_row_opt.T))
    mark = value_pair_row[:, _MARK].copy()
    mtm_acct_exp[acct, exp] = mark
    basis_pair = basis_contingency(
        mark,
        value_pair_row[:, _BASIS_UP],
        value_pair_row[:, _BASIS_DOWN],
        val.tau_exp[exp],
        params.basis,
    )
    pos, neg = val.static_discount_pos[exp], val.static_discount_neg[exp]
    skew_value = value_pair_row[:, _FIRST_SCENARIO + np.flatnonzero(val.is_skew)]
    discount = np.where(skew_value >= 0.0, pos[:, None], neg[:, None])
    skew_pnl = -np.abs(discount * skew_value - mark[:, None])

    # Pairs are sorted by account: one CSR row per holder sums its pairs with given weights.
    first_pair = np.flatnonzero(np.concatenate([[True], acct[1:] != acct[:-1]]))
    holders = acct[first_pair]
    indptr = np.append(first_pair, acct.size)
    columns = np.arange(acct.size)

    def per_holder(weight: FloatArray, pair_values: FloatArray) -> FloatArray:
        summing = sp.csr_matrix((weight, columns, indptr), shape=(holders.size, acct.size))
        return np.asarray(summing @ pair_values, dtype=np.float64)

    ones = np.ones(acct.size)
    basis_acct[holders] = per_holder(ones, basis_pair)
    linear = per_holder(neg, value_pair_row)
    np.maximum(value_pair_row, 0.0, out=value_pair_row)
    pnl = per_holder(pos - neg, value_pair_row)
    pnl += linear
    pnl = pnl[:, _FIRST_SCENARIO:]
    pnl -= per_holder(ones, mark)[:, None]
    pnl[:, val.is_skew] = per_holder(ones, skew_pnl)
    pnl *= val.dampening
    return mtm_acct_exp, basis_acct, holders, pnl


def _expiry_pairs(
    positions: sp.csr_matrix, expiry_of_option: IntArray, n_exp: int
) -> tuple[IntArray, IntArray, sp.csr_matrix] | None:
    """Held (account, expiry) pairs sorted by account then expiry, and their positions.

    Returns ``(account, expiry, quantity)`` with ``quantity`` a pairs × options matrix, or
    ``None`` when nothing is held. When options are listed by expiry (the usual layout) and
    the positions' indices are sorted, the entries are already in pair order and no sort is
    needed.
    """
    held = positions.tocoo()
    if held.nnz == 0:
        return None
    row = held.row.astype(np.int64)
    key = row * n_exp + expiry_of_option[held.col]
    col, data = held.col, held.data
    if np.any(key[1:] < key[:-1]):
        order = np.argsort(key, kind="stable")
        key, col, data = key[order], col[order], data[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    pair_key = key[starts]
    quantity = sp.csr_matrix(
        (data, col, np.append(starts, key.size)), shape=(starts.size, positions.shape[1])
    )
    return (pair_key // n_exp).astype(np.intp), (pair_key % n_exp).astype(np.intp), quantity


def _oracle(
    market: DeriveMarket,
    accounts: DeriveAccounts,
    cp: ContingencyParameters,
    coll_value: FloatArray,
) -> FloatArray:
    """Oracle-confidence add-on per account: perp, each expiry, each collateral.

    The account's confidence is spot's, lowered to the perp's when a perp is held; an expiry
    also takes its forward / rate / vol confidence; a collateral takes its own and spot's.
    """
    spot = market.spot
    has_perp = accounts.perp_position != 0.0
    with_perp = min(market.spot_confidence, market.perp_confidence)
    account_conf = np.where(has_perp, with_perp, market.spot_confidence)
    perp = oracle_contingency(account_conf, np.abs(accounts.perp_position) * spot, cp)
    # The account's confidence takes one of two values (with or without a perp), so the
    # option add-on is the gross option units times a per-option rate for either value.
    conf_opt = market.expiries.confidence[market.options.expiry]
    rate_opt = np.stack(
        [
            oracle_contingency(np.minimum(conf_opt, conf), np.full(conf_opt.size, spot), cp)
            for conf in (market.spot_confidence, with_perp)
        ],
        axis=1,
    )
    by_perp = np.asarray(abs(accounts.options) @ rate_opt, dtype=np.float64)
    options = np.where(has_perp, by_perp[:, 1], by_perp[:, 0])
    coll_conf = np.minimum(market.collateral_confidence, market.spot_confidence)
    collateral = oracle_contingency(coll_conf[None, :], coll_value, cp).sum(axis=1)
    return np.asarray(perp + options + collateral, dtype=np.float64)


def _check_shapes(market: DeriveMarket, accounts: DeriveAccounts) -> None:
    n = accounts.n_accounts
    n_opt, n_coll = market.options.strike.size, len(market.collateral_names)
    if accounts.options.shape != (n, n_opt):
        raise ValueError(
            f"option positions are {accounts.options.shape[0]} × {accounts.options.shape[1]}, "
            f"expected {n} accounts × {n_opt} options of the market"
        )
    if accounts.collateral.shape != (n, n_coll):
        raise ValueError(
            f"collateral amounts have shape {accounts.collateral.shape}, "
            f"expected {n} accounts × {n_coll} collateral assets of the market"
        )
    if not accounts.perp_position.shape == accounts.perp_unrealised.shape == (n,):
        raise ValueError(f"perp positions and unrealised P&L must have one entry per account ({n})")


def _collateral_params(params: DerivePMRM2Parameters, name: str) -> CollateralParameters:
    try:
        return params.collaterals[name]
    except KeyError:
        raise ValueError(f"collateral {name!r} has no parameters in the PMRM_2 profile") from None


def _worst(basis_acct: FloatArray, pnl_acct_scen: FloatArray) -> tuple[FloatArray, IntArray]:
    """Lowest of basis contingency and scenario P&L; index of the scenario (-1 = basis)."""
    if pnl_acct_scen.shape[1] == 0:
        return basis_acct, np.full(basis_acct.shape, -1, dtype=np.intp)
    index = np.argmin(pnl_acct_scen, axis=1)
    lowest = pnl_acct_scen[np.arange(index.size), index]
    by_scenario = lowest < basis_acct
    return np.where(by_scenario, lowest, basis_acct), np.where(by_scenario, index, -1)


def _margins(
    figures: AccountFigures,
    cash: FloatArray,
    worst: FloatArray,
    im_factor: float,
    mm_factor: float,
) -> tuple[FloatArray, FloatArray]:
    """(IM, MM) per account from the figures and the worst loss."""
    mm_add = figures.mm_perp + figures.mm_option + figures.mm_collateral
    im_add = figures.im_perp + figures.im_option + figures.im_collateral + figures.oracle
    equity = figures.mtm_acct + cash
    mm = equity + mm_factor * worst - mm_add
    im = equity + im_factor * worst - mm_add - im_add
    return im, mm


# --------------------------------------------------------------------------------------------
# Results and the public entry points
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeriveMarginResult:
    """Margin of one portfolio with every intermediate figure (USD unless stated).

    ``im`` / ``mm`` are collateral value minus requirement (negative = short of margin).
    ``scenario_pnl[i]`` is the P&L of ``params.scenarios[i]`` relative to MTM, after static
    discounts and dampening. ``worst_scenario`` is the index of the scenario that set
    ``worst_loss``, or ``-1`` when the basis contingency did. ``mtm`` excludes cash.
    Contingencies are positive add-ons; the ``im_*`` ones come on top of the ``mm_*`` ones.
    Per-option arrays (``vol_*``, ``skew``) follow the market's option order.
    """

    im: float
    mm: float
    mtm: float
    cash: float
    option_mtm_per_expiry: FloatArray
    option_mtm_per_expiry_discounted: FloatArray
    collateral_values: FloatArray
    perp_value: float
    scenario_pnl: FloatArray
    worst_scenario: int
    worst_loss: float
    basis_contingency: float
    mm_factor: float
    im_factor: float
    mm_perp_contingency: float
    im_perp_contingency: float
    mm_option_contingency: float
    im_option_contingency: float
    mm_collateral_contingency: float
    im_collateral_contingency: float
    oracle_contingency: float
    static_discount_pos: FloatArray
    static_discount_neg: FloatArray
    vol_up_multiplier: FloatArray
    vol_down_multiplier: FloatArray
    vol_up_evaluated: FloatArray
    vol_down_evaluated: FloatArray
    skew: dict[VolShock, SkewShock]

    @property
    def option_mtm(self) -> float:
        """Mark-to-market of all options."""
        return float(self.option_mtm_per_expiry.sum())

    @property
    def collateral_mtm(self) -> float:
        """Value of all collateral in stable units."""
        return float(self.collateral_values.sum())

    @property
    def mm_contingency(self) -> float:
        """Total MM add-on (perp, option and collateral)."""
        return (
            self.mm_perp_contingency + self.mm_option_contingency + self.mm_collateral_contingency
        )

    @property
    def im_contingency(self) -> float:
        """IM add-on on top of the MM one (perp, option, collateral, oracle)."""
        return (
            self.im_perp_contingency
            + self.im_option_contingency
            + self.im_collateral_contingency
            + self.oracle_contingency
        )


@dataclass(frozen=True)
class DeriveBookMargin:
    """Margin of many accounts (arrays of length ``n_accounts``, USD).

    ``im`` / ``mm`` are collateral value minus requirement; ``mtm`` excludes cash;
    ``worst_scenario`` is the index into ``params.scenarios`` (``-1`` = basis contingency).
    """

    im: FloatArray
    mm: FloatArray
    mtm: FloatArray
    worst_loss: FloatArray
    worst_scenario: IntArray


def derive_pmrm2_margin(
    portfolio: DerivePortfolio, params: DerivePMRM2Parameters
) -> DeriveMarginResult:
    """Initial and maintenance margin of one portfolio under Derive's PMRM_2.

    Parameters
    ----------
    portfolio : DerivePortfolio
        Holdings and market snapshot of one underlying.
    params : DerivePMRM2Parameters
        Scenarios, shocks, discounts and contingencies.

    Returns
    -------
    DeriveMarginResult
        ``mm = MTM + cash + mm_factor * worst - MM add-ons`` and
        ``im = MTM + cash + (im_factor + de-peg) * worst - MM add-ons - IM add-ons``, where
        ``worst`` is the lowest of the basis contingency and every scenario P&L.
    """
    market = portfolio.market
    val = value_market(market, params)
    fig = account_figures(market, portfolio.as_accounts(), params, val)
    worst, worst_index = _worst(fig.basis_acct, fig.pnl_acct_scen)
    mm_factor = params.margin.mm_factor
    im_factor = depeg_im_factor(market.stable_price, params.margin, params.contingency)
    im, mm = _margins(fig, np.array([portfolio.cash]), worst, im_factor, mm_factor)
    mtm_exp = fig.mtm_acct_exp[0]
    opt_exp = market.options.expiry
    discount_at_mark = np.where(mtm_exp >= 0.0, val.static_discount_pos, val.static_discount_neg)
    return DeriveMarginResult(
        im=float(im[0]),
        mm=float(mm[0]),
        mtm=float(fig.mtm_acct[0]),
        cash=float(portfolio.cash),
        option_mtm_per_expiry=mtm_exp,
        option_mtm_per_expiry_discounted=mtm_exp * discount_at_mark,
        collateral_values=fig.collateral_acct_coll[0],
        perp_value=float(portfolio.perp_unrealised),
        scenario_pnl=fig.pnl_acct_scen[0],
        worst_scenario=int(worst_index[0]),
        worst_loss=float(worst[0]),
        basis_contingency=float(fig.basis_acct[0]),
        mm_factor=mm_factor,
        im_factor=im_factor,
        mm_perp_contingency=float(fig.mm_perp[0]),
        im_perp_contingency=float(fig.im_perp[0]),
        mm_option_contingency=float(fig.mm_option[0]),
        im_option_contingency=float(fig.im_option[0]),
        mm_collateral_contingency=float(fig.mm_collateral[0]),
        im_collateral_contingency=float(fig.im_collateral[0]),
        oracle_contingency=float(fig.oracle[0]),
        static_discount_pos=val.static_discount_pos,
        static_discount_neg=val.static_discount_neg,
        vol_up_multiplier=val.vol_up_exp[opt_exp],
        vol_down_multiplier=val.vol_down_exp[opt_exp],
        vol_up_evaluated=np.maximum(
            params.vol_shock.min_vol_up_shock, market.options.vol * val.vol_up_exp[opt_exp]
        ),
        vol_down_evaluated=market.options.vol * val.vol_down_exp[opt_exp],
        skew=val.skew,
    )


def derive_pmrm2_book_margin(
    market: DeriveMarket,
    accounts: DeriveAccounts,
    params: DerivePMRM2Parameters,
    *,
    chunk_size: int = 50_000,
) -> DeriveBookMargin:
    """IM and MM of many accounts sharing one market snapshot.

    The option price grid (grid rows × options) is computed once; accounts are processed in
    chunks of ``chunk_size`` rows to bound memory (each chunk holds a few
    ``chunk_size × n_scenarios`` arrays and one ``held pairs × grid rows`` array, float64).
    Results equal :func:`derive_pmrm2_margin` applied to each account.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of accounts, got {chunk_size}")
    val = value_market(market, params)
    mm_factor = params.margin.mm_factor
    im_factor = depeg_im_factor(market.stable_price, params.margin, params.contingency)
    parts: list[tuple[FloatArray, FloatArray, FloatArray, FloatArray, IntArray]] = []
    for start in range(0, accounts.n_accounts, chunk_size):
        chunk = accounts.rows(start, start + chunk_size)
        fig = account_figures(market, chunk, params, val)
        worst, worst_index = _worst(fig.basis_acct, fig.pnl_acct_scen)
        im, mm = _margins(fig, chunk.cash, worst, im_factor, mm_factor)
        parts.append((im, mm, fig.mtm_acct, worst, worst_index))
    if not parts:
        empty = np.zeros(0)
        return DeriveBookMargin(empty, empty, empty, empty, np.zeros(0, dtype=np.intp))
    im, mm, mtm, worst, index = (np.concatenate(col) for col in zip(*parts, strict=True))
    return DeriveBookMargin(im=im, mm=mm, mtm=mtm, worst_loss=worst, worst_scenario=index)
