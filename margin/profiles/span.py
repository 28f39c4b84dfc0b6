"""SPAN (CME Standard Portfolio Analysis of Risk), as a vectorized profile.

Per combined commodity (one underlying): a 16-scenario risk array per contract, scanning
risk, an intra-commodity (calendar) spread charge on composite deltas by expiry tier, a
short option minimum; and, across two commodities, an inter-commodity spread credit::

    loss_k        = -(V(F (1 + f_k R), σ + v_k VSR, t - look_ahead) - V(F, σ, t))   per contract
                    f = 0, ±1/3, ±2/3, ±1 with vol up and down (14), ±extreme with vol
                    unchanged weighted by the cover fraction (2)
    scan          = max(0, max_k Σ q · loss_k)
    composite Δ   = Σ_j w_j · ½ (Δ(F_j, σ + VSR, t - look_ahead) + Δ(F_j, σ - VSR, t - look_ahead))
                    F_j = F (1 + f_j R) over the 7 price points; 1 per contract for futures
    intra charge  = Σ_(tier pairs, by priority) rate · spreads,  spreads = min(|Δ_a|, |Δ_b|)
                    for opposite-signed tier deltas, consumed as they are used
    risk          = max(scan + intra − inter credit, short option minimum · short options)
    margin        = risk − net option value   (long option value is a credit, short a charge)

Units: USD for prices, values and requirements; the price scan range ``R`` is a decimal
fraction of the price (CME publishes it in price units: divide by the price); the vol scan
range is in absolute vol (0.05 = 5 vol points); deltas in coins. See ``docs/methodologies.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from margin.instruments import (
    InstrumentKind,
    InstrumentTable,
    instrument_greeks,
    instrument_value,
)
from margin.pricing import black76_greeks
from margin.typing import FloatArray, IntArray

__all__ = [
    "DEFAULT_DELTA_WEIGHTS",
    "SPAN_DELTA_PRICE_FRACTIONS",
    "SPAN_PRICE_FRACTIONS",
    "SPAN_VOL_DIRECTIONS",
    "InterCommoditySpread",
    "IntraSpreadTier",
    "SpanMargin",
    "SpanParameters",
    "inter_commodity_credit",
    "span_composite_delta",
    "span_margin",
    "span_risk_array",
]

#: Price move of each scenario as a fraction of the price scan range (15, 16: extreme moves).
SPAN_PRICE_FRACTIONS = (
    np.array([0, 0, 1, 1, -1, -1, 2, 2, -2, -2, 3, 3, -3, -3, 0, 0], dtype=np.float64) / 3.0
)
#: Vol direction of each scenario (+1 up, -1 down, 0 unchanged).
SPAN_VOL_DIRECTIONS = np.array([1, -1] * 7 + [0, 0], dtype=np.float64)
#: The 7 price points of the delta scenarios (fractions of the price scan range), in the order
#: of ``SpanParameters.delta_weights``: the paired scenarios 1-14 of the risk array.
SPAN_DELTA_PRICE_FRACTIONS = SPAN_PRICE_FRACTIONS[:14:2].copy()
_DELTA_POINT_NAMES = ("0", "+1/3", "-1/3", "+2/3", "-2/3", "+1", "-1")


def _normal_weights(fractions: FloatArray) -> tuple[float, ...]:
    """Standard-normal density at ``z = 3 f`` (scan range = 3 standard deviations), summing to 1."""
    density = np.exp(-0.5 * (3.0 * fractions) ** 2)
    return tuple(float(x) for x in density / density.sum())


#: Our default probability weight of each delta price point (0, +1/3, -1/3, +2/3, -2/3, +1, -1):
#: the standard-normal density at z = 0, ±1, ±2, ±3 normalised to sum to 1, i.e. about
#: 0.399050, 0.242036 (twice), 0.054006 (twice), 0.004433 (twice). An exchange loads its own
#: weights from its SPAN risk parameter file.
DEFAULT_DELTA_WEIGHTS = _normal_weights(SPAN_DELTA_PRICE_FRACTIONS)
#: Tolerance on the sum of the delta weights.
DELTA_WEIGHT_SUM_TOLERANCE = 1e-9


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IntraSpreadTier(_Frozen):
    """A calendar spread between two expiry tiers and its charge per spread (USD per coin).

    Tiers are numbered by the ``tier_bounds_years`` of :class:`SpanParameters`.
    """

    tier_a: int = Field(ge=0)
    tier_b: int = Field(ge=0)
    charge: float = Field(ge=0.0)


class SpanParameters(_Frozen):
    """SPAN parameters of one combined commodity."""

    price_scan_range: float = Field(gt=0.0, lt=1.0, description="decimal fraction of price")
    vol_scan_range: float = Field(ge=0.0, description="absolute vol (0.05 = 5 points)")
    extreme_move_multiple: float = Field(3.0, gt=0.0, description="extreme move / scan range")
    extreme_cover_fraction: float = Field(0.35, ge=0.0, le=1.0)
    look_ahead_days: float = Field(1.0, ge=0.0)
    min_vol: float = Field(0.01, gt=0.0, description="floor of a down-shocked vol")
    short_option_minimum: float = Field(0.0, ge=0.0, description="USD per short option")
    tier_bounds_years: tuple[float, ...] = Field(
        default=(), description="upper bounds of expiry tiers; perps are in tier 0"
    )
    intra_spreads: tuple[IntraSpreadTier, ...] = Field(default=(), description="by priority")
    delta_weights: tuple[float, ...] = Field(
        default=DEFAULT_DELTA_WEIGHTS,
        description="probability weight of the composite-delta price points "
        "0, +1/3, -1/3, +2/3, -2/3, +1, -1 (× price scan range); non-negative, sum 1",
    )

    @field_validator("delta_weights")
    @classmethod
    def _delta_weights(cls, weights: tuple[float, ...]) -> tuple[float, ...]:
        n = SPAN_DELTA_PRICE_FRACTIONS.size
        if len(weights) != n:
            raise ValueError(
                f"delta_weights needs {n} weights (price points {', '.join(_DELTA_POINT_NAMES)})"
                f", got {len(weights)}"
            )
        bad = [i for i, w in enumerate(weights) if not (np.isfinite(w) and w >= 0.0)]
        if bad:
            point = _DELTA_POINT_NAMES[bad[0]]
            raise ValueError(
                f"delta_weights must be finite and non-negative; the weight of price point "
                f"{point} is {weights[bad[0]]}"
            )
        total = float(np.sum(weights))
        if abs(total - 1.0) > DELTA_WEIGHT_SUM_TOLERANCE:
            raise ValueError(
                f"delta_weights must sum to 1 (within {DELTA_WEIGHT_SUM_TOLERANCE:g}), they sum to "
                f"{total!r}"
            )
        return weights

    @model_validator(mode="after")
    def _tiers(self) -> SpanParameters:
        n_tiers = len(self.tier_bounds_years) + 1
        for s in self.intra_spreads:
            if max(s.tier_a, s.tier_b) >= n_tiers or s.tier_a == s.tier_b:
                raise ValueError(f"intra spread {s.tier_a}-{s.tier_b}: tiers must differ and exist")
        return self


def _broadcast(n: int, *values: ArrayLike) -> tuple[FloatArray, ...]:
    return tuple(np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)) for x in values)


def _after_look_ahead(table: InstrumentTable, params: SpanParameters) -> InstrumentTable:
    """The instruments ``look_ahead_days`` later (expiries shortened, floored at 0)."""
    return replace(
        table,
        expiry_years=np.maximum(table.expiry_years - params.look_ahead_days / 365.0, 0.0),
    )


def _shocked_vol(vol: FloatArray, directions: FloatArray, params: SpanParameters) -> FloatArray:
    """Vol per instrument and scenario, ``σ + direction · VSR`` floored at ``min_vol``."""
    return np.maximum(vol[:, None] + directions * params.vol_scan_range, params.min_vol)


def span_risk_array(
    table: InstrumentTable,
    mark: ArrayLike,
    forward: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    params: SpanParameters,
) -> FloatArray:
    """Weighted loss per contract in the 16 scenarios, shape (instruments, 16), USD.

    Losses are positive. Options are revalued ``look_ahead_days`` later (time decay is part
    of the array); the two extreme scenarios are multiplied by the cover fraction.
    """
    n = len(table)
    mark, forward, v, rate = _broadcast(n, mark, forward, vol, rate)
    fractions = SPAN_PRICE_FRACTIONS.copy()
    fractions[14:] = [params.extreme_move_multiple, -params.extreme_move_multiple]
    spot_mult = np.ones((n, 1)) * (1.0 + fractions * params.price_scan_range)
    shocked_vol = _shocked_vol(v, SPAN_VOL_DIRECTIONS, params)
    later = _after_look_ahead(table, params)
    now = instrument_value(table, mark, forward, v, rate, np.ones((n, 1)))
    shocked = instrument_value(later, mark, forward, shocked_vol, rate, spot_mult)
    weight = np.ones(16)
    weight[14:] = params.extreme_cover_fraction
    return np.asarray(-(shocked - now) * weight, dtype=np.float64)


def span_composite_delta(
    table: InstrumentTable,
    mark: ArrayLike,
    forward: ArrayLike,
    index: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    params: SpanParameters,
) -> FloatArray:
    """SPAN composite delta per contract, in coins (shape (instruments,)).

    For an option, the probability-weighted average of its Black-76 deltas one look-ahead
    later at the 7 price points of the risk array, each point's vol-up and vol-down deltas
    averaged::

        Δ_composite = Σ_j w_j · ½ (Δ(F_j, σ_up, t') + Δ(F_j, σ_down, t'))
        F_j = F (1 + f_j R),  σ_up/down = max(σ ± VSR, min_vol),  t' = max(t - look_ahead, 0)

    with ``w`` = ``params.delta_weights`` and ``f`` = :data:`SPAN_DELTA_PRICE_FRACTIONS`.
    Option deltas are converted to coins like the engine's (``size · Δ · F / index``).
    Spot, perps and futures keep their current delta: 1 coin per coin of contract size
    (``size · mark / index`` for linear kinds, ``size / index`` for inverse ones).

    Parameters
    ----------
    table : InstrumentTable
        The instruments (length ``n``).
    mark, forward, index, vol, rate : array_like, shape (n,) or scalar
        USD mark, USD forward, USD index, annualised decimal vol and annual decimal rate.
    params : SpanParameters
        Scan ranges, look-ahead, vol floor and delta weights.
    """
    n = len(table)
    mark, forward, index, v, rate = _broadcast(n, mark, forward, index, vol, rate)
    delta = np.zeros(n)
    options = table.is_option
    others = np.flatnonzero(~options)
    if others.size:
        delta[others] = instrument_greeks(
            table.take(others),
            mark[others],
            forward[others],
            index[others],
            v[others],
            rate[others],
        )[0]
    rows = np.flatnonzero(options)
    if rows.size:
        # (options, 14): the paired scenarios 1-14, price point j at columns 2j (vol up), 2j+1
        spot_mult = 1.0 + SPAN_PRICE_FRACTIONS[:14] * params.price_scan_range
        later = _after_look_ahead(table.take(rows), params)
        greeks = black76_greeks(
            forward[rows, None] * spot_mult,
            later.strike[:, None],
            later.expiry_years[:, None],
            _shocked_vol(v[rows], SPAN_VOL_DIRECTIONS[:14], params),
            rate[rows, None],
            later.is_call[:, None],
        )
        scenario_weight = np.repeat(np.asarray(params.delta_weights), 2) / 2.0
        black_delta = greeks.delta @ scenario_weight
        delta[rows] = table.contract_size[rows] * black_delta * forward[rows] / index[rows]
    return delta


def _tier_of(table: InstrumentTable, params: SpanParameters) -> IntArray:
    years = np.nan_to_num(table.expiry_years, nan=0.0)
    return np.asarray(np.searchsorted(np.array(params.tier_bounds_years), years), dtype=np.intp)


def _intra_charge(delta_acct_tier: FloatArray, params: SpanParameters) -> FloatArray:
    """Calendar spread charge: tier pairs in priority order consume opposite-signed deltas."""
    remaining = delta_acct_tier.copy()
    charge = np.zeros(remaining.shape[0])
    for spread in params.intra_spreads:
        a, b = remaining[:, spread.tier_a], remaining[:, spread.tier_b]
        opposite = np.sign(a) * np.sign(b) < 0
        spreads = np.where(opposite, np.minimum(np.abs(a), np.abs(b)), 0.0)
        charge += spreads * spread.charge
        remaining[:, spread.tier_a] -= np.sign(a) * spreads
        remaining[:, spread.tier_b] -= np.sign(b) * spreads
    return charge


@dataclass(frozen=True)
class SpanMargin:
    """Per-account SPAN figures (USD, positive = requirement).

    ``net_delta`` (coins) and ``scan_risk`` feed :func:`inter_commodity_credit`;
    ``margin`` is ``risk_requirement - net_option_value`` before any inter-commodity credit.
    """

    scan_risk: FloatArray
    intra_charge: FloatArray
    short_option_minimum: FloatArray
    risk_requirement: FloatArray
    net_option_value: FloatArray
    net_delta: FloatArray
    worst_scenario: IntArray

    @property
    def margin(self) -> FloatArray:
        """Total requirement: risk requirement less the net option value."""
        return np.asarray(self.risk_requirement - self.net_option_value, dtype=np.float64)


def span_margin(
    table: InstrumentTable,
    positions: sp.csr_matrix,
    *,
    index: float,
    mark: ArrayLike,
    forward: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike = 0.0,
    params: SpanParameters,
) -> SpanMargin:
    """SPAN requirement of every account (rows of ``positions``) for one combined commodity.

    The intra-commodity charge and ``net_delta`` use :func:`span_composite_delta` (coins per
    contract); options are valued at their mark for the net option value.
    """
    if len(set(table.underlying.tolist())) > 1:
        raise ValueError("span_margin takes the instruments of one underlying at a time")
    n = len(table)
    if positions.shape[1] != n:
        raise ValueError(f"positions have {positions.shape[1]} instrument columns, the table {n}")
    mark, forward, v, rate = _broadcast(n, mark, forward, vol, rate)
    loss_inst_scen = span_risk_array(table, mark, forward, v, rate, params)
    loss_acct_scen = np.asarray(positions @ loss_inst_scen)
    worst = np.argmax(loss_acct_scen, axis=1)
    scan = np.maximum(0.0, loss_acct_scen[np.arange(worst.size), worst])

    delta = span_composite_delta(table, mark, forward, index, v, rate, params)
    n_tiers = len(params.tier_bounds_years) + 1
    by_tier = sp.csr_matrix((delta, (np.arange(n), _tier_of(table, params))), shape=(n, n_tiers))
    delta_acct_tier = np.asarray((positions @ by_tier).toarray())
    intra = _intra_charge(delta_acct_tier, params)

    is_option = table.kind == InstrumentKind.OPTION
    short_options = np.asarray((-positions).maximum(0) @ is_option.astype(np.float64)).ravel()
    som = short_options * params.short_option_minimum
    option_value = np.where(is_option, mark * table.contract_size, 0.0)
    nov = np.asarray(positions @ option_value).ravel()
    return SpanMargin(
        scan_risk=scan,
        intra_charge=intra,
        short_option_minimum=som,
        risk_requirement=np.maximum(scan + intra, som),
        net_option_value=nov,
        net_delta=delta_acct_tier.sum(axis=1),
        worst_scenario=np.asarray(worst, dtype=np.intp),
    )


class InterCommoditySpread(_Frozen):
    """Credit between two commodities: ``delta_ratio_a`` coins of A against
    ``delta_ratio_b`` of B form one spread when their net deltas have opposite signs."""

    delta_ratio_a: float = Field(gt=0.0)
    delta_ratio_b: float = Field(gt=0.0)
    credit_rate: float = Field(ge=0.0, le=1.0)


def inter_commodity_credit(
    a: SpanMargin, b: SpanMargin, spread: InterCommoditySpread
) -> tuple[FloatArray, FloatArray]:
    """Credit (USD, positive) to each leg, per account.

    Weighted price risk per coin of net delta is ``scan / |net delta|``; the credit on a leg
    is ``rate × spreads × delta ratio × that price risk``, with
    ``spreads = min(|Δ_a| / ratio_a, |Δ_b| / ratio_b)`` when the deltas have opposite signs.
    The credit never exceeds the leg's scanning risk.
    """
    da, db = a.net_delta, b.net_delta
    opposite = np.sign(da) * np.sign(db) < 0
    spreads = np.where(
        opposite,
        np.minimum(np.abs(da) / spread.delta_ratio_a, np.abs(db) / spread.delta_ratio_b),
        0.0,
    )

    def leg(m: SpanMargin, d: FloatArray, ratio: float) -> FloatArray:
        risk_per_delta = np.where(d != 0.0, m.scan_risk / np.where(d != 0.0, np.abs(d), 1.0), 0.0)
        credit = spread.credit_rate * spreads * ratio * risk_per_delta
        return np.asarray(np.minimum(credit, m.scan_risk), dtype=np.float64)

    return leg(a, da, spread.delta_ratio_a), leg(b, db, spread.delta_ratio_b)
