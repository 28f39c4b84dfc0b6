"""Deribit portfolio margin: 9 × 3 grid, extended table with dampener, roll shock, offsets.

For one underlying (a Deribit "currency"), instruments are grouped into currency pairs:
coin-settled (``btc_usd``: inverse perps, futures and options) and USD-settled
(``btc_usdc``: linear ones). Risk vectors come from the engine's full revaluation
(:func:`margin.instruments.instrument_pnl`) and one sparse product per pair::

    standard    moves linspace(-R, R, 2 buckets + 1) × vol (up, unchanged, down)
    extended    moves -66 % ... +500 % with vol up; delta-one instruments at the edge ±R
    agg_k       sum over pairs of  min(x, 0) + min(pnl_offset max(x, 0), max_offsetable)
    extended_k  min(0, extended_table_factor x_k + extended_dampener)       (losses only)
    worst       max(0, -min(agg, extended))
    roll shock  sum |coins| max(annualised_move_risk tau, min_annualised_move)   (perps, futures)
    IM          worst + roll shock;   MM = mm_factor IM

Figures are in the risk currency: USD, or coin (``currency="coin"``: each scenario P&L is
converted at that scenario's shocked index, which is how Deribit's coin-settled vectors are
expressed). The delta shock, correlation contingency and open-order margin are not
modelled (their rules are not published). See ``docs/methodologies.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

from margin.instruments import InstrumentKind, InstrumentTable, instrument_pnl
from margin.parallel import run_chunks
from margin.typing import FloatArray, IntArray

__all__ = [
    "DeribitMargin",
    "DeribitPMParameters",
    "deribit_pm_margin",
    "deribit_vol_multipliers",
    "standard_moves",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeribitPMParameters(_Frozen):
    """Deribit PM parameters of one currency (defaults: the published June-2024 BTC set).

    ``extended_dampener`` and ``max_offsetable_pnl`` are in USD (converted to coin at the
    index when the risk currency is the coin); ``max_offsetable_pnl = 0`` means no cap.
    """

    price_range: float = Field(0.16, gt=0.0, lt=1.0)
    buckets_count: int = Field(4, ge=1)
    volatility_range_up: float = Field(0.5, ge=0.0)
    volatility_range_down: float = Field(0.25, ge=0.0)
    min_volatility_for_shock_up: float = Field(0.5, ge=0.0)
    short_term_vega_power: float = Field(0.30, ge=0.0)
    long_term_vega_power: float = Field(0.13, ge=0.0)
    short_term_days: float = Field(30.0, gt=0.0)
    dte_floor_days: float = Field(1.0, gt=0.0)
    extended_moves: tuple[float, ...] = (-0.66, -0.33, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
    extended_table_factor: float = Field(1.0, ge=0.0)
    extended_dampener: float = Field(100_000.0, ge=0.0)
    annualised_move_risk: float = Field(0.075, ge=0.0)
    min_annualised_move: float = Field(0.01, ge=0.0)
    pnl_offset: float = Field(0.0, ge=0.0, le=1.0)
    max_offsetable_pnl: float = Field(0.0, ge=0.0)
    mm_factor: float = Field(0.8, gt=0.0, le=1.0)


def standard_moves(params: DeribitPMParameters) -> FloatArray:
    """The standard grid's price moves: ``2 buckets + 1`` points evenly spaced in [-R, R]."""
    return np.linspace(-params.price_range, params.price_range, 2 * params.buckets_count + 1)


def deribit_vol_multipliers(
    dte_days: ArrayLike, params: DeribitPMParameters
) -> tuple[FloatArray, FloatArray]:
    """Vol-up and vol-down multipliers per instrument (1 for undated instruments).

    ``m = (30 / max(DTE, floor)) ** p``, ``p`` short-term below 30 days; up = ``1 + up_range m``,
    down = ``max(0, 1 - down_range m)``.
    """
    dte = np.asarray(dte_days, dtype=np.float64)
    dated = np.isfinite(dte)
    safe = np.where(dated, dte, params.short_term_days)
    power = np.where(
        safe < params.short_term_days, params.short_term_vega_power, params.long_term_vega_power
    )
    m = (params.short_term_days / np.maximum(safe, params.dte_floor_days)) ** power
    up = np.where(dated, 1.0 + params.volatility_range_up * m, 1.0)
    down = np.where(dated, np.maximum(0.0, 1.0 - params.volatility_range_down * m), 1.0)
    return up, down


@dataclass(frozen=True)
class DeribitMargin:
    """Requirements per account in the risk currency (positive = margin required).

    ``worst_scenario`` indexes the standard grid (price-major, vol up/unchanged/down) then
    the extended moves; ``risk_vector`` is the aggregated standard vector (accounts × 27).
    """

    im: FloatArray
    mm: FloatArray
    worst_case: FloatArray
    roll_shock: FloatArray
    worst_scenario: IntArray
    risk_vector: FloatArray
    extended_vector: FloatArray


def _scenario_grid(
    table: InstrumentTable, vol: FloatArray, params: DeribitPMParameters
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Spot multipliers and shocked vols, standard (n × 27) and extended (n × n_ext)."""
    n = len(table)
    up, down = deribit_vol_multipliers(table.dte_days, params)
    vol_up = np.maximum(vol * up, params.min_volatility_for_shock_up)
    vol_up = np.where(table.is_option, vol_up, vol)
    moves = standard_moves(params)
    std_mult = np.repeat(1.0 + moves, 3)[None, :] * np.ones((n, 1))
    std_vol = np.tile(np.stack([vol_up, vol, vol * down], axis=1), (1, moves.size))
    ext = np.array(params.extended_moves)
    # Delta-one instruments are taken at the edge of the standard range in the extended table.
    edge = 1.0 + np.sign(ext) * params.price_range
    ext_mult = np.where(table.is_option[:, None], 1.0 + ext[None, :], edge[None, :])
    ext_vol = np.repeat(vol_up[:, None], ext.size, axis=1)
    return std_mult, std_vol, ext_mult, ext_vol


def _roll_shock_coins(
    table: InstrumentTable, index: float, params: DeribitPMParameters
) -> FloatArray:
    """Roll-shock rate × coins per contract for perps and futures (0 for spot and options)."""
    dated_or_perp = np.isin(
        table.kind,
        (
            InstrumentKind.LINEAR_PERP,
            InstrumentKind.INVERSE_PERP,
            InstrumentKind.LINEAR_FUTURE,
            InstrumentKind.INVERSE_FUTURE,
        ),
    )
    coins = np.where(table.is_inverse, table.contract_size / index, table.contract_size)
    tau = np.nan_to_num(table.expiry_years, nan=0.0)
    rate = np.maximum(params.annualised_move_risk * tau, params.min_annualised_move)
    return np.asarray(np.where(dated_or_perp, coins * rate, 0.0), dtype=np.float64)


def _worst_of_chunk(
    held: sp.csr_matrix,
    both: FloatArray,
    pairs: list[IntArray],
    n_std: int,
    p: DeribitPMParameters,
    usd_per_unit: float,
) -> tuple[FloatArray, FloatArray, IntArray, FloatArray]:
    """Aggregated standard vector, dampened extended vector, worst scenario and worst loss.

    ``both`` holds the standard then the extended P&L per contract (instruments × scenarios);
    ``pairs`` the instrument columns of each currency pair present.
    """
    cap = p.max_offsetable_pnl / usd_per_unit if p.max_offsetable_pnl > 0 else np.inf
    agg = np.zeros((held.shape[0], n_std))
    ext_loss = np.zeros((held.shape[0], both.shape[1] - n_std))
    for cols in pairs:
        x_both = np.asarray((held[:, cols] if cols.size < held.shape[1] else held) @ both[cols])
        x = x_both[:, :n_std]
        pair_pnl = np.minimum(x, 0.0)
        if p.pnl_offset:  # gains offset other pairs' losses only at pnl_offset, up to the cap
            pair_pnl += np.minimum(p.pnl_offset * np.maximum(x, 0.0), cap)
        agg += pair_pnl
        ext_loss += x_both[:, n_std:]  # the extended table sums across currency pairs
    ext_loss *= p.extended_table_factor
    ext_loss += p.extended_dampener / usd_per_unit
    np.minimum(ext_loss, 0.0, out=ext_loss)
    rows = np.arange(held.shape[0])
    worst_std, worst_ext = np.argmin(agg, axis=1), np.argmin(ext_loss, axis=1)
    low_std, low_ext = agg[rows, worst_std], ext_loss[rows, worst_ext]
    extended_worse = low_ext < low_std  # ties go to the standard grid, which comes first
    index = np.asarray(np.where(extended_worse, worst_ext + n_std, worst_std), dtype=np.intp)
    worst = np.maximum(0.0, -np.where(extended_worse, low_ext, low_std))
    return agg, ext_loss, index, np.asarray(worst, dtype=np.float64)


def deribit_pm_margin(
    table: InstrumentTable,
    positions: sp.csr_matrix,
    *,
    index: float,
    mark: ArrayLike,
    forward: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike = 0.0,
    params: DeribitPMParameters | None = None,
    currency: Literal["usd", "coin"] = "usd",
    chunk_size: int = 65_536,
    n_threads: int = 2,
) -> DeribitMargin:
    """Deribit PM initial and maintenance margin of every account (rows of ``positions``).

    Parameters
    ----------
    table : InstrumentTable
        Instruments of one underlying (spot, perps, futures, options; linear or inverse).
    positions : scipy.sparse.csr_matrix
        Accounts × instruments, signed contracts.
    index : float
        Index price (USD).
    mark, forward, vol, rate : array_like
        Per instrument: USD mark, USD forward, annualised decimal vol, annual decimal rate.
    params : DeribitPMParameters, optional
        Defaults to the published BTC set.
    currency : {"usd", "coin"}
        Risk currency of the result.
    chunk_size : int
        Accounts per block of scenario arithmetic (bounds memory; results do not depend on it).
    n_threads : int
        Threads the blocks run on (results do not depend on it).
    """
    p = params or DeribitPMParameters()
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of accounts, got {chunk_size}")
    if len(set(table.underlying.tolist())) > 1:
        raise ValueError("deribit_pm_margin takes the instruments of one underlying at a time")
    if positions.shape[1] != len(table):
        raise ValueError(
            f"positions have {positions.shape[1]} instrument columns, the table {len(table)}"
        )
    n = len(table)
    mark, forward, v, rate = (
        np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)) for x in (mark, forward, vol, rate)
    )
    std_mult, std_vol, ext_mult, ext_vol = _scenario_grid(table, v, p)
    std = instrument_pnl(table, mark, forward, v, rate, std_mult, std_vol)
    ext = instrument_pnl(table, mark, forward, v, rate, ext_mult, ext_vol)
    usd_per_unit = 1.0 if currency == "usd" else index
    if currency == "coin":  # convert each scenario's P&L at that scenario's shocked index
        std, ext = std / (index * std_mult), ext / (index * ext_mult)

    # Accounts without a position in this underlying need nothing: every figure is 0 there.
    # The others are processed in chunks of rows to keep the scenario arrays cache-sized.
    positions = sp.csr_matrix(positions)
    n_accounts = positions.shape[0]
    active = np.flatnonzero(np.diff(positions.indptr))
    both = np.concatenate([std, ext], axis=1)
    n_std = std.shape[1]
    pairs = [  # USD-settled, then coin-settled currency pair
        cols for pair in (False, True) if (cols := np.flatnonzero(table.coin_settled == pair)).size
    ]
    worst = np.zeros(n_accounts)
    worst_index = np.zeros(n_accounts, dtype=np.intp)
    risk_vector = np.zeros((n_accounts, n_std))
    extended_vector = np.zeros((n_accounts, ext.shape[1]))

    def work(rows: IntArray) -> None:
        agg, ext_loss, chunk_index, chunk_worst = _worst_of_chunk(
            positions[rows], both, pairs, n_std, p, usd_per_unit
        )
        worst[rows], worst_index[rows] = chunk_worst, chunk_index
        risk_vector[rows], extended_vector[rows] = agg, ext_loss

    blocks = [active[lo : lo + chunk_size] for lo in range(0, active.size, chunk_size)]
    run_chunks(work, blocks, n_threads)

    roll_coins = np.asarray(abs(positions) @ _roll_shock_coins(table, index, p)).ravel()
    roll = roll_coins * (index if currency == "usd" else 1.0)
    im = worst + roll
    return DeribitMargin(
        im=im,
        mm=p.mm_factor * im,
        worst_case=worst,
        roll_shock=roll,
        worst_scenario=worst_index,
        risk_vector=risk_vector,
        extended_vector=extended_vector,
    )
