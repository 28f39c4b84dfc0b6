"""Paradex portfolio margin: 24 weighted scenarios, a minimum delta requirement, provisions.

The engine's full-revaluation risk arrays (:func:`margin.instruments.instrument_pnl`) give
every instrument's P&L in every scenario; one sparse product with the positions gives every
account's P&L; the rest is array arithmetic::

    SCAN      = max(0, -min_k w_k PnL_k)
    MinDelta  = (u |NetDelta| + h HedgedDelta) S,   HedgedDelta = (GrossDelta - |NetDelta|) / 2
    NPIMR     = max(SCAN, MinDelta)
    IMR       = NPIMR + funding provision + fee provision
    MMR       = mmr_fraction NPIMR + funding provision + fee provision

Units: USD for prices and requirements; moves, vol shocks and weights as decimals
(0.16 = +16 %); deltas in coins. One underlying per call. The formulas are restated in
``docs/methodologies.md`` (section "Paradex portfolio margin").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

from margin.instruments import InstrumentTable, instrument_greeks, instrument_pnl
from margin.typing import FloatArray, IntArray

__all__ = [
    "BTC_ETH_SCENARIOS",
    "ParadexMargin",
    "ParadexPMParameters",
    "ParadexScenario",
    "min_delta_risk",
    "paradex_margin",
    "paradex_risk_array",
    "paradex_vol_multipliers",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ParadexScenario(_Frozen):
    """Spot move, relative vol shock at 30 days and weight of one scenario (decimals)."""

    spot_move: float = Field(gt=-1.0)
    vol_shock: float = Field(ge=-1.0)
    weight: float = Field(ge=0.0, le=1.0)


def _table(rows: list[tuple[float, float, float]]) -> tuple[ParadexScenario, ...]:
    return tuple(ParadexScenario(spot_move=s, vol_shock=v, weight=w) for s, v, w in rows)


#: Published BTC/ETH table: 16 standard scenarios (vol +40 % / -22 %) and 8 weighted tails.
BTC_ETH_SCENARIOS = _table(
    [
        (0.16, 0.40, 1.0),
        (0.12, 0.40, 1.0),
        (0.12, -0.22, 1.0),
        (0.08, 0.40, 1.0),
        (0.08, -0.22, 1.0),
        (0.04, 0.40, 1.0),
        (0.04, -0.22, 1.0),
        (0.0, 0.40, 1.0),
        (0.0, -0.22, 1.0),
        (-0.04, 0.40, 1.0),
        (-0.04, -0.22, 1.0),
        (-0.08, 0.40, 1.0),
        (-0.08, -0.22, 1.0),
        (-0.12, 0.40, 1.0),
        (-0.12, -0.22, 1.0),
        (-0.16, 0.40, 1.0),
        (-0.66, 0.40, 0.18),
        (-0.33, 0.40, 0.36),
        (0.50, 0.40, 0.24),
        (1.00, 0.40, 0.12),
        (2.00, 0.40, 0.06),
        (3.00, 0.40, 0.04),
        (4.00, 0.40, 0.03),
        (5.00, 0.40, 0.024),
    ]
)


class ParadexPMParameters(_Frozen):
    """Paradex PM parameters of one underlying (defaults: the published BTC/ETH set)."""

    scenarios: tuple[ParadexScenario, ...] = Field(default=BTC_ETH_SCENARIOS, min_length=1)
    dte_floor_days: float = Field(1.0, gt=0.0)
    short_term_days: float = Field(30.0, gt=0.0, description="below: short-term vega power")
    short_term_power: float = Field(0.30, ge=0.0)
    long_term_power: float = Field(0.13, ge=0.0)
    min_vol_shock_up: float = Field(0.40, ge=0.0, description="floor on an up-shocked vol")
    unhedged_delta_rate: float = Field(0.02, ge=0.0, description="u, on |net delta|")
    hedged_delta_rate: float = Field(0.01, ge=0.0, description="h, on hedged delta")
    mmr_fraction: float = Field(0.5, gt=0.0, le=1.0, description="MMR share of NPIMR")


def paradex_vol_multipliers(dte_days: ArrayLike, params: ParadexPMParameters) -> FloatArray:
    """Vol multiplier per instrument and scenario, shape (instruments, scenarios).

    ``1 + vol_shock (30 / max(dte_floor, DTE)) ** p`` with ``p`` the short-term power when
    ``DTE < 30`` and the long-term power otherwise (NaN DTE, i.e. undated instruments, gives 1).
    """
    dte = np.asarray(dte_days, dtype=np.float64)
    dated = np.isfinite(dte)
    safe = np.where(dated, dte, params.short_term_days)
    power = np.where(safe < params.short_term_days, params.short_term_power, params.long_term_power)
    scale = (params.short_term_days / np.maximum(params.dte_floor_days, safe)) ** power
    shock = np.array([s.vol_shock for s in params.scenarios])
    mult = 1.0 + np.outer(scale, shock)
    return np.asarray(np.where(dated[:, None], mult, 1.0), dtype=np.float64)


def paradex_risk_array(
    table: InstrumentTable,
    mark: ArrayLike,
    forward: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    params: ParadexPMParameters,
) -> FloatArray:
    """Weighted scenario P&L per contract, shape (instruments, scenarios), USD.

    Shocked vol = ``max(vol · multiplier, min_vol_shock_up)`` for up shocks and
    ``vol · multiplier`` otherwise; every price moves by ``1 + spot_move``.
    """
    n = len(table)
    mark, forward, v, rate = (
        np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)) for x in (mark, forward, vol, rate)
    )
    mult = paradex_vol_multipliers(table.dte_days, params)
    up = np.array([s.vol_shock > 0.0 for s in params.scenarios])
    shocked_vol = np.where(
        up, np.maximum(v[:, None] * mult, params.min_vol_shock_up), v[:, None] * mult
    )
    spot_mult = np.ones((n, 1)) * (1.0 + np.array([s.spot_move for s in params.scenarios]))
    pnl = instrument_pnl(table, mark, forward, v, rate, spot_mult, shocked_vol)
    weight = np.array([s.weight for s in params.scenarios])
    return np.asarray(pnl * weight, dtype=np.float64)


def min_delta_risk(
    net_delta: ArrayLike, gross_delta: ArrayLike, spot: float, params: ParadexPMParameters
) -> FloatArray:
    """``(u |net| + h (gross - |net|) / 2) · S`` with deltas in coins, USD."""
    net = np.abs(np.asarray(net_delta, dtype=np.float64))
    hedged = (np.asarray(gross_delta, dtype=np.float64) - net) / 2.0
    return np.asarray(
        (params.unhedged_delta_rate * net + params.hedged_delta_rate * hedged) * spot,
        dtype=np.float64,
    )


@dataclass(frozen=True)
class ParadexMargin:
    """Requirements per account (positive USD) and their parts.

    ``worst_scenario`` indexes ``params.scenarios`` (the scenario with the largest weighted
    loss; meaningful when ``scan_risk > 0``).
    """

    imr: FloatArray
    mmr: FloatArray
    scan_risk: FloatArray
    min_delta_risk: FloatArray
    worst_scenario: IntArray

    @property
    def npimr(self) -> FloatArray:
        """Net portfolio IMR before provisions: ``max(SCAN, MinDelta)``."""
        return np.maximum(self.scan_risk, self.min_delta_risk)


def paradex_margin(
    table: InstrumentTable,
    positions: sp.csr_matrix,
    *,
    spot: float,
    mark: ArrayLike,
    forward: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike = 0.0,
    params: ParadexPMParameters | None = None,
    funding_provision: ArrayLike = 0.0,
    fee_provision: ArrayLike = 0.0,
) -> ParadexMargin:
    """IMR and MMR of every account (rows of ``positions``, contracts per instrument).

    Parameters
    ----------
    table : InstrumentTable
        Instruments of one underlying.
    positions : scipy.sparse.csr_matrix
        Accounts × instruments, signed contracts.
    spot : float
        Index price (USD) used for the minimum delta requirement.
    mark, forward, vol, rate : array_like
        Per instrument: USD mark, USD forward, annualised decimal vol, annual decimal rate.
    params : ParadexPMParameters, optional
        Defaults to the published BTC/ETH parameters.
    funding_provision, fee_provision : array_like
        Per account (or scalar), USD; added in full to both IMR and MMR.
    """
    p = params or ParadexPMParameters()
    if len(set(table.underlying.tolist())) > 1:
        raise ValueError("paradex_margin takes the instruments of one underlying at a time")
    if positions.shape[1] != len(table):
        raise ValueError(
            f"positions have {positions.shape[1]} instrument columns, the table {len(table)}"
        )
    risk_inst_scen = paradex_risk_array(table, mark, forward, vol, rate, p)
    pnl_acct_scen = np.asarray(positions @ risk_inst_scen)
    worst = np.argmin(pnl_acct_scen, axis=1)
    scan = np.maximum(0.0, -pnl_acct_scen[np.arange(worst.size), worst])
    n = len(table)
    mark, forward, vol, rate = (
        np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)) for x in (mark, forward, vol, rate)
    )
    delta, _, _ = instrument_greeks(table, mark, forward, np.full(n, spot), vol, rate)
    net = np.asarray(positions @ delta).ravel()
    gross = np.asarray(abs(positions) @ np.abs(delta)).ravel()
    delta_risk = min_delta_risk(net, gross, spot, p)
    npimr = np.maximum(scan, delta_risk)
    provisions = np.asarray(funding_provision, dtype=np.float64) + np.asarray(
        fee_provision, dtype=np.float64
    )
    return ParadexMargin(
        imr=np.asarray(npimr + provisions, dtype=np.float64),
        mmr=np.asarray(p.mmr_fraction * npimr + provisions, dtype=np.float64),
        scan_risk=scan,
        min_delta_risk=delta_risk,
        worst_scenario=np.asarray(worst, dtype=np.intp),
    )
