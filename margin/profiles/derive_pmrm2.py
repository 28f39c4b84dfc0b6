"""Derive's portfolio margin risk manager, version 2 (``PMRM_2``), as a vectorized profile.

One underlying per book: every account holds cash, one perpetual position, options grouped
by expiry and collateral assets (some of them *risk-cancelling*, i.e. shocked with spot).
The market is valued once: every option in every scenario in one Black-76 call on a
(grid rows × options) grid, the risk array. The static discount depends on the sign of each
(account, expiry) value, but a pair holding only longs (only shorts) is never negative
(positive), so for those pairs the discounted P&L is linear in the positions: one sparse
product per chunk of accounts gives every holder's scenario P&L, spot exposure included.
Only pairs holding both longs and shorts are valued one by one for the part of their value
above zero, and only the mark, basis and skew rows (``-|.|``) are finished per pair.
Accounts without options never get a scenario row: their worst scenario is found in closed
form. A single portfolio is a book of one account.

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

from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, model_validator

from margin.parallel import run_chunks
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
        """The accounts ``start:stop`` (views of the arrays, no copy)."""
        stop = min(stop, self.n_accounts)
        options = sp.csr_matrix(self.options)  # no copy when already CSR
        indptr = options.indptr[start : stop + 1]
        lo, hi = indptr[0], indptr[-1]
        return DeriveAccounts(
            cash=self.cash[start:stop],
            perp_position=self.perp_position[start:stop],
            perp_unrealised=self.perp_unrealised[start:stop],
            options=sp.csr_matrix(
                (options.data[lo:hi], options.indices[lo:hi], indptr - lo),
                shape=(stop - start, options.shape[1]),
            ),
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


def _strike_group(options: OptionSeries) -> IntArray:
    """(expiry, strike) group of every option, numbered in increasing (expiry, strike)."""
    if options.strike.size == 0:
        return np.zeros(0, dtype=np.intp)
    keys = np.stack([options.expiry.astype(np.float64), options.strike], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel().astype(np.intp)


@dataclass(frozen=True)
class _Holdings:
    """Option positions as non-zero entries sorted by (account, strike group).

    Strike groups are numbered in (expiry, strike) order, so the entries are also sorted by
    (account, expiry). ``group_start`` / ``pair_start`` are the positions where a new
    (account, strike group) / (account, expiry) pair begins.
    """

    n_accounts: int
    n_options: int
    account: IntArray
    column: IntArray
    amount: FloatArray
    group_start: IntArray
    pair_start: IntArray


def _holdings(positions: sp.csr_matrix, options: OptionSeries, strike_group: IntArray) -> _Holdings:
    """Sort the positions' entries by (account, strike group) (:class:`_Holdings`).

    When each account's columns are sorted and their groups increase with the column
    (options listed by expiry and strike, the usual layout) no sort is needed.
    """
    csr = sp.csr_matrix(positions)
    n_acct, n_opt = csr.shape
    account = np.repeat(np.arange(n_acct, dtype=np.intp), np.diff(csr.indptr))
    column, amount = csr.indices, csr.data
    n_groups = int(strike_group.max(initial=-1)) + 1
    key = account.astype(np.int64, copy=False) * n_groups + strike_group[column]
    if np.any(key[1:] < key[:-1]):
        order = np.argsort(key, kind="stable")
        account, column, amount, key = account[order], column[order], amount[order], key[order]
    new_group = np.concatenate([[True], key[1:] != key[:-1]])
    expiry = options.expiry[column]
    new_pair = new_group.copy()
    new_pair[1:] &= (account[1:] != account[:-1]) | (expiry[1:] != expiry[:-1])
    return _Holdings(
        n_accounts=n_acct,
        n_options=n_opt,
        account=account,
        column=column,
        amount=amount,
        group_start=np.flatnonzero(new_group),
        pair_start=np.flatnonzero(new_pair),
    )


def _naked_shorts(held: _Holdings) -> FloatArray:
    """Naked short units per account summed over expiries (see :func:`naked_shorts_per_expiry`)."""
    if held.amount.size == 0:
        return np.zeros(held.n_accounts)
    group = np.repeat(
        np.arange(held.group_start.size), np.diff(held.group_start, append=held.amount.size)
    )
    net = np.bincount(group, weights=held.amount)
    naked = np.maximum(-net, 0.0)
    return np.bincount(
        held.account[held.group_start], weights=naked, minlength=held.n_accounts
    ).astype(np.float64)


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
    margin scenario in the order of ``params.scenarios``. ``strike_group`` numbers the
    (expiry, strike) pairs of the options (calls and puts at one strike share a group), in
    increasing (expiry, strike) order.
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
    option_expiry: IntArray
    strike_group: IntArray

    @cached_property
    def damped_price_opt_scenario(self) -> FloatArray:
        """One-unit option values in every margin scenario times the scenario's dampening,
        options × scenarios (C order)."""
        return np.ascontiguousarray(self.price_row_opt[_FIRST_SCENARIO:].T * self.dampening)

    @cached_property
    def price_opt_per_pair(self) -> FloatArray:
        """One-unit option values in the rows finished per (account, expiry) pair.

        Options × (mark, basis up, basis down, then each skew scenario in order), C order.
        """
        rows = np.concatenate(
            [[_MARK, _BASIS_UP, _BASIS_DOWN], _FIRST_SCENARIO + np.flatnonzero(self.is_skew)]
        )
        return np.ascontiguousarray(self.price_row_opt[rows].T)

    @cached_property
    def holder_price_rows(self) -> FloatArray:
        """Right operand of the per-holder P&L product, (2 options + 1) × scenarios.

        Rows ``(pos_e p - p_mark) d`` for every option (``e`` its expiry, ``p`` its one-unit
        value in each scenario, ``d`` the dampening), then ``(neg_e p - p_mark) d``, then
        the exposure row ``(s - 1) d``.
        """
        price = self.price_row_opt[_FIRST_SCENARIO:].T
        mark = self.price_row_opt[_MARK][:, None]
        expiry = self.option_expiry
        rows = [
            (discount[expiry][:, None] * price - mark) * self.dampening
            for discount in (self.static_discount_pos, self.static_discount_neg)
        ]
        return np.ascontiguousarray(np.vstack([*rows, self.linear_pnl[None, :]]))

    @cached_property
    def linear_pnl(self) -> FloatArray:
        """Dampened P&L of one USD of spot exposure in each scenario: ``(s - 1) d``."""
        return np.asarray((self.spot_shock - 1.0) * self.dampening, dtype=np.float64)


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
        option_expiry=opt.expiry,
        strike_group=_strike_group(opt),
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
    """MTM, basis contingency, scenario P&L and add-ons of every account.

    Every figure is kept, including the dense (accounts × scenarios) P&L; the book path
    (:func:`derive_pmrm2_book_margin`) reaches the same margins without forming it.
    """
    _check_shapes(market, accounts)
    entries = _holdings(accounts.options, market.options, valuation.strike_group)
    coll_value, exposure = _collateral_and_exposure(market, accounts, params)
    held = _holder_figures(market, entries, exposure, params, valuation)
    n_acct, n_exp = accounts.n_accounts, market.expiries.seconds_to_expiry.size
    pnl_acct_scen = np.multiply.outer(exposure, valuation.linear_pnl)
    pnl_acct_scen[held.holders] = held.pnl
    mtm_acct_exp = np.zeros((n_acct, n_exp))
    mtm_acct_exp[held.pair_account, held.pair_expiry] = held.pair_mark
    basis_acct = np.zeros(n_acct)
    basis_acct[held.holders] = held.basis
    add = _add_ons(market, accounts, params, entries, coll_value)
    return AccountFigures(
        mtm_acct_exp=mtm_acct_exp,
        basis_acct=basis_acct,
        pnl_acct_scen=pnl_acct_scen,
        collateral_acct_coll=coll_value,
        mtm_acct=_mtm(accounts, coll_value, held),
        mm_perp=add.mm_perp,
        im_perp=add.im_perp,
        mm_option=add.mm_option,
        im_option=add.im_option,
        mm_collateral=add.mm_collateral,
        im_collateral=add.im_collateral,
        oracle=add.oracle,
    )


@dataclass(frozen=True)
class _HolderFigures:
    """Figures of the accounts holding options and of their (account, expiry) pairs.

    ``holders`` are sorted account indices; ``mark`` (option MTM), ``basis`` and the rows of
    ``pnl`` (holders × scenarios: options and spot exposure, discounted and dampened)
    follow them. ``pair_*`` describe the held pairs (sorted by account, then expiry) with
    their option MTM.
    """

    pair_account: IntArray
    pair_expiry: IntArray
    pair_mark: FloatArray
    holders: IntArray
    mark: FloatArray
    basis: FloatArray
    pnl: FloatArray


def _holder_figures(
    market: DeriveMarket,
    entries: _Holdings,
    exposure: FloatArray,
    params: DerivePMRM2Parameters,
    val: MarketValuation,
) -> _HolderFigures:
    """Option MTM, basis contingency and scenario P&L of the accounts that hold options.

    Per held (account, expiry) pair with value ``V`` in a scenario, the P&L is
    ``(D(V) V - V_mark) d`` with ``D`` the static discount for the sign of ``V``. Writing
    ``D(V) V = w V + (pos - neg) max(V, 0)`` with ``w = neg``, and noting that a pair holding
    only long options never has ``V < 0`` (``w = pos``, no second term) and one holding only
    shorts never has ``V > 0`` (``w = neg``, no second term):

    - one sparse product gives ``Σ_pairs (w V - V_mark) d + exposure (s - 1) d`` per
      holder (:func:`_linear_part`), the perp and risk-cancelling collateral included;
    - only pairs holding both longs and shorts are valued one by one, for
      ``Σ (pos - neg) max(V d, 0)``;
    - the mark, the basis contingency and the skew scenarios, where each expiry counts as a
      loss (``-|.|``, standing for a rotation of the skew the other way), are finished per
      pair on those few grid rows only.

    Accounts without options cost nothing here.
    """
    n_scen = val.dampening.size
    pairs = _expiry_pairs(entries, market.options.expiry)
    if pairs is None:
        none, empty = np.zeros(0, dtype=np.intp), np.zeros(0)
        return _HolderFigures(none, none, empty, none, empty, empty, np.zeros((0, n_scen)))
    acct, exp, quantity = pairs
    pos, neg = val.static_discount_pos[exp], val.static_discount_neg[exp]
    by_account = _PairsByAccount(acct)

    # Mark, basis and skew per pair (few grid rows), then summed per account.
    few = np.ascontiguousarray(np.asarray(quantity @ val.price_opt_per_pair).T)  # rows × pairs
    mark = few[_MARK]
    finished = np.empty((few.shape[0] - 1, acct.size))
    finished[0] = mark
    finished[1] = basis_contingency(
        mark, few[_BASIS_UP], few[_BASIS_DOWN], val.tau_exp[exp], params.basis
    )
    for j in range(3, few.shape[0]):
        skew_value = few[j]
        discounted = np.where(skew_value >= 0.0, pos, neg) * skew_value
        finished[j - 1] = -np.abs(discounted - mark)
    mark_basis_skew = by_account.sum(finished.T)

    # Discounted, dampened scenario P&L summed per account.
    n_long, n_short = (
        np.diff(np.concatenate([[0], np.cumsum(signed)])[quantity.indptr])
        for signed in (quantity.data > 0.0, quantity.data < 0.0)
    )
    pnl = _linear_part(quantity, n_short > 0, exposure[by_account.holders], by_account, val)
    mixed = np.flatnonzero((n_long > 0) & (n_short > 0))
    if mixed.size:
        pnl += _convex_part(quantity, mixed, (pos - neg)[mixed], by_account, val)
    for j, k in enumerate(np.flatnonzero(val.is_skew)):
        pnl[:, k] = mark_basis_skew[:, 2 + j] * val.dampening[k]
    return _HolderFigures(
        pair_account=acct,
        pair_expiry=exp,
        pair_mark=mark,
        holders=by_account.holders,
        mark=mark_basis_skew[:, 0],
        basis=mark_basis_skew[:, 1],
        pnl=pnl,
    )


def _linear_part(
    quantity: sp.csr_matrix,
    discount_is_neg: BoolArray,
    exposure: FloatArray,
    by_account: _PairsByAccount,
    val: MarketValuation,
) -> FloatArray:
    """``Σ_pairs (w V - V_mark) d + exposure (s - 1) d`` per holder and scenario.

    ``w`` is the pair's static discount for positive values, or for negative ones where
    ``discount_is_neg``. Per option and per choice of ``w`` the price row
    ``(w p - p_mark) d`` is fixed, so one product of a holders × (2 options + 1) sparse
    matrix (each position in the column of its option and ``w``, then the spot exposure)
    with those rows and ``(s - 1) d`` gives the sum.
    """
    n_opt, n_hold = quantity.shape[1], by_account.holders.size
    per_holder = np.diff(quantity.indptr[by_account.indptr])  # pairs are contiguous
    holder = np.repeat(np.arange(n_hold), per_holder)
    in_neg = np.repeat(discount_is_neg, np.diff(quantity.indptr))
    # Row h: its positions, then its exposure (one more entry per row).
    indptr = np.concatenate([[0], np.cumsum(per_holder + 1)])
    indices = np.empty(indptr[-1], dtype=np.intp)
    data = np.empty(indptr[-1])
    at = np.arange(quantity.nnz) + holder
    indices[at] = quantity.indices + n_opt * in_neg
    data[at] = quantity.data
    indices[indptr[1:] - 1] = 2 * n_opt
    data[indptr[1:] - 1] = exposure
    operand = _csr(data, indices, indptr, (n_hold, 2 * n_opt + 1))
    return np.asarray(operand @ val.holder_price_rows, dtype=np.float64)


def _convex_part(
    quantity: sp.csr_matrix,
    pairs: IntArray,
    weight: FloatArray,
    by_account: _PairsByAccount,
    val: MarketValuation,
) -> FloatArray:
    """``Σ weight max(V d, 0)`` per holder and scenario over the given pairs (rows of
    ``quantity``), ``V`` being each pair's value in every margin scenario, ``d`` its
    dampening."""
    value = np.asarray(quantity[pairs] @ val.damped_price_opt_scenario, dtype=np.float64)
    np.maximum(value, 0.0, out=value)
    n_hold = by_account.holders.size
    per_holder = np.bincount(by_account.holder_of_pair[pairs], minlength=n_hold)
    indptr = np.concatenate([[0], np.cumsum(per_holder)])
    summing = _csr(weight, np.arange(pairs.size), indptr, (n_hold, pairs.size))
    return np.asarray(summing @ value, dtype=np.float64)


def _csr(
    data: FloatArray, indices: IntArray, indptr: IntArray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """CSR matrix from its arrays, with 32-bit indices when they fit (scipy scans and copies
    64-bit index arrays to narrow them itself)."""
    if max(shape[0], shape[1], data.size) < np.iinfo(np.int32).max:
        indices = indices.astype(np.int32, copy=False)
        indptr = indptr.astype(np.int32, copy=False)
    return sp.csr_matrix((data, indices, indptr), shape=shape)


class _PairsByAccount:
    """Pairs sorted by account, grouped per account (a CSR layout of accounts × pairs).

    ``holders`` are the distinct accounts, ``holder_of_pair`` the index into ``holders`` of
    every pair and ``indptr`` the pair range of every holder.
    """

    def __init__(self, account: IntArray) -> None:
        first = np.concatenate([[True], account[1:] != account[:-1]])
        starts = np.flatnonzero(first)
        self.holders: IntArray = account[starts]
        self.holder_of_pair: IntArray = np.cumsum(first, dtype=np.intp) - 1
        self.indptr: IntArray = np.append(starts, account.size)

    def sum(self, values: FloatArray) -> FloatArray:
        """Sum of the rows of ``values`` (one per pair) over each holder's pairs."""
        n_pairs = self.holder_of_pair.size
        ones = np.ones(n_pairs)
        summing = _csr(ones, np.arange(n_pairs), self.indptr, (self.holders.size, n_pairs))
        return np.asarray(summing @ values, dtype=np.float64)


def _expiry_pairs(
    held: _Holdings, expiry_of_option: IntArray
) -> tuple[IntArray, IntArray, sp.csr_matrix] | None:
    """Held (account, expiry) pairs sorted by account then expiry, and their positions.

    Returns ``(account, expiry, quantity)`` with ``quantity`` a pairs × options matrix whose
    rows hold each pair's entries, or ``None`` when nothing is held.
    """
    if held.amount.size == 0:
        return None
    first = held.pair_start
    quantity = _csr(
        held.amount, held.column, np.append(first, held.amount.size), (first.size, held.n_options)
    )
    return held.account[first], expiry_of_option[held.column[first]], quantity


def _collateral_and_exposure(
    market: DeriveMarket, accounts: DeriveAccounts, params: DerivePMRM2Parameters
) -> tuple[FloatArray, FloatArray]:
    """Collateral values (accounts × assets, stable units) and spot exposure per account.

    The exposure (USD per unit of relative spot move) is the perp notional at the perp price
    plus the risk-cancelling collateral value; its scenario P&L is ``exposure (s - 1) d``.
    """
    coll_params = [_collateral_params(params, name) for name in market.collateral_names]
    coll_value = accounts.collateral * (market.collateral_price / market.stable_price)
    risk_cancelling = np.array([c.risk_cancelling for c in coll_params], dtype=bool)
    exposure = accounts.perp_position * market.perp_price + _sum_columns(
        coll_value[:, risk_cancelling]
    )
    return coll_value, exposure


def _sum_columns(values: FloatArray) -> FloatArray:
    """Row sums of a narrow (accounts × few) array, column by column (faster than ``sum``)."""
    total = np.zeros(values.shape[0])
    for j in range(values.shape[1]):
        total += values[:, j]
    return total


def _mtm(accounts: DeriveAccounts, coll_value: FloatArray, held: _HolderFigures) -> FloatArray:
    """Mark-to-market per account excluding cash: perp, options and collateral."""
    mtm = accounts.perp_unrealised + _sum_columns(coll_value)
    mtm[held.holders] += held.mark
    return np.asarray(mtm, dtype=np.float64)


@dataclass(frozen=True)
class _AddOns:
    """Contingency add-ons per account (USD, positive); ``im_*`` come on top of ``mm_*``."""

    mm_perp: FloatArray
    im_perp: FloatArray
    mm_option: FloatArray
    im_option: FloatArray
    mm_collateral: FloatArray
    im_collateral: FloatArray
    oracle: FloatArray

    @property
    def mm_total(self) -> FloatArray:
        """Every MM add-on."""
        return self.mm_perp + self.mm_option + self.mm_collateral

    @property
    def im_extra(self) -> FloatArray:
        """Every IM add-on on top of the MM ones."""
        return self.im_perp + self.im_option + self.im_collateral + self.oracle


def _add_ons(
    market: DeriveMarket,
    accounts: DeriveAccounts,
    params: DerivePMRM2Parameters,
    entries: _Holdings,
    coll_value: FloatArray,
) -> _AddOns:
    """Perp, naked-short option, collateral-haircut and oracle add-ons of every account."""
    cp, spot = params.contingency, market.spot
    coll_params = [_collateral_params(params, name) for name in market.collateral_names]
    perp_notional = np.abs(accounts.perp_position) * spot
    naked_notional = _naked_shorts(entries) * spot
    mm_haircut = np.array([c.mm_haircut for c in coll_params])
    im_haircut = np.array([c.im_haircut for c in coll_params])
    return _AddOns(
        mm_perp=perp_notional * cp.mm_perp_percent,
        im_perp=perp_notional * cp.im_perp_percent,
        mm_option=naked_notional * cp.mm_option_percent,
        im_option=naked_notional * cp.im_option_percent,
        mm_collateral=coll_value @ mm_haircut,
        im_collateral=coll_value @ im_haircut,
        oracle=_oracle(market, accounts, cp, coll_value),
    )


def _oracle(
    market: DeriveMarket,
    accounts: DeriveAccounts,
    cp: ContingencyParameters,
    coll_value: FloatArray,
) -> FloatArray:
    """Oracle-confidence add-on per account: perp, each expiry, each collateral.

    The account's confidence is spot's, lowered to the perp's when a perp is held; an expiry
    also takes its forward / rate / vol confidence; a collateral takes its own and spot's.
    Parts whose confidences are all above the threshold are skipped (they add 0).
    """
    spot = market.spot
    with_perp = min(market.spot_confidence, market.perp_confidence)
    # Without a perp the perp notional is 0, so the perp part needs only the perp's confidence.
    perp_rate = oracle_contingency(np.array([with_perp]), np.ones(1), cp)[0]
    total = np.abs(accounts.perp_position) * spot * perp_rate
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
    if np.any(rate_opt != 0.0):
        positions = accounts.options
        gross = sp.csr_matrix(
            (np.abs(positions.data), positions.indices, positions.indptr), shape=positions.shape
        )
        by_perp = np.asarray(gross @ rate_opt, dtype=np.float64)
        total += np.where(accounts.perp_position != 0.0, by_perp[:, 1], by_perp[:, 0])
    coll_conf = np.minimum(market.collateral_confidence, market.spot_confidence)
    if np.any(coll_conf < cp.confidence_threshold):
        total += oracle_contingency(coll_conf[None, :], coll_value, cp).sum(axis=1)
    return total


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
    lowest = np.take_along_axis(pnl_acct_scen, index[:, None], axis=1)[:, 0]
    by_scenario = lowest < basis_acct
    return np.where(by_scenario, lowest, basis_acct), np.where(by_scenario, index, -1)


def _worst_in_book(
    held: _HolderFigures, exposure: FloatArray, linear_pnl: FloatArray
) -> tuple[FloatArray, IntArray]:
    """:func:`_worst` of every account without forming the accounts × scenarios P&L.

    Only option holders have a dense row of scenario P&L; the others are found in closed form
    (:func:`_worst_of_exposure`).
    """
    worst, index = _worst_of_exposure(exposure, linear_pnl)
    if held.holders.size:
        worst[held.holders], index[held.holders] = _worst(held.basis, held.pnl)
    return worst, index


def _worst_of_exposure(exposure: FloatArray, linear_pnl: FloatArray) -> tuple[FloatArray, IntArray]:
    """:func:`_worst` for accounts whose scenario P&L is ``exposure * linear_pnl`` (basis 0).

    Multiplying by a positive number keeps the order of the scenarios, so a long exposure
    loses most in the scenario of lowest ``linear_pnl`` and a short one in that of highest.
    Scenarios within a relative 1e-9 of that extreme are compared exactly, so that ties break
    to the first scenario as a dense search would (for exposures whose products with the
    factors do not underflow, i.e. above ~1e-300 USD).
    """
    worst, index = np.zeros(exposure.size), np.full(exposure.size, -1, dtype=np.intp)
    for side, extreme in ((exposure > 0.0, linear_pnl.min()), (exposure < 0.0, linear_pnl.max())):
        near = np.flatnonzero(np.abs(linear_pnl - extreme) <= 1e-9 * abs(extreme))
        accounts = np.flatnonzero(side)
        pnl = np.multiply.outer(exposure[accounts], linear_pnl[near])
        at = np.argmin(pnl, axis=1)
        lowest = np.take_along_axis(pnl, at[:, None], axis=1)[:, 0]
        loss = lowest < 0.0
        worst[accounts[loss]] = lowest[loss]
        index[accounts[loss]] = near[at[loss]]
    return worst, index


def _margins(
    add: _AddOns,
    equity: FloatArray,
    worst: FloatArray,
    im_factor: float,
    mm_factor: float,
) -> tuple[FloatArray, FloatArray]:
    """(IM, MM) per account from equity (MTM + cash), the worst loss and the add-ons."""
    mm_add = add.mm_total
    mm = equity + mm_factor * worst - mm_add
    im = equity + im_factor * worst - mm_add - add.im_extra
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
    add = _AddOns(
        fig.mm_perp,
        fig.im_perp,
        fig.mm_option,
        fig.im_option,
        fig.mm_collateral,
        fig.im_collateral,
        fig.oracle,
    )
    im, mm = _margins(add, fig.mtm_acct + portfolio.cash, worst, im_factor, mm_factor)
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
    n_threads: int = 2,
) -> DeriveBookMargin:
    """IM and MM of many accounts sharing one market snapshot.

    The option price grid (grid rows × options) is computed once; accounts are processed in
    chunks of ``chunk_size`` rows to bound memory (float64 arrays of held pairs × 5 grid
    rows, mixed long/short pairs × scenarios and option holders × scenarios per chunk).
    Only accounts holding options get a row of scenario P&L: for the others the P&L is their
    spot exposure times a per-scenario factor and the worst scenario is found in closed form.
    Chunks run on ``n_threads`` threads (NumPy and SciPy release the GIL); results equal
    :func:`derive_pmrm2_margin` applied to each account whatever the chunk size or thread count.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of accounts, got {chunk_size}")
    val = value_market(market, params)
    mm_factor = params.margin.mm_factor
    im_factor = depeg_im_factor(market.stable_price, params.margin, params.contingency)
    _check_shapes(market, accounts)
    accounts = replace(accounts, options=sp.csr_matrix(accounts.options))  # rows sliced below
    n = accounts.n_accounts
    out = DeriveBookMargin(
        im=np.empty(n),
        mm=np.empty(n),
        mtm=np.empty(n),
        worst_loss=np.empty(n),
        worst_scenario=np.empty(n, dtype=np.intp),
    )

    def work(rows: slice) -> None:
        chunk = accounts.rows(rows.start, rows.stop)
        entries = _holdings(chunk.options, market.options, val.strike_group)
        coll_value, exposure = _collateral_and_exposure(market, chunk, params)
        held = _holder_figures(market, entries, exposure, params, val)
        out.worst_loss[rows], out.worst_scenario[rows] = _worst_in_book(
            held, exposure, val.linear_pnl
        )
        out.mtm[rows] = _mtm(chunk, coll_value, held)
        add = _add_ons(market, chunk, params, entries, coll_value)
        out.im[rows], out.mm[rows] = _margins(
            add, out.mtm[rows] + chunk.cash, out.worst_loss[rows], im_factor, mm_factor
        )

    slices = [slice(lo, min(lo + chunk_size, n)) for lo in range(0, n, chunk_size)]
    run_chunks(work, slices, n_threads)
    return out
