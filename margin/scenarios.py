"""Scenario sets per underlying and risk arrays (instruments x scenarios) by full revaluation.

A scenario of underlying ``u`` moves its index, every mark and every forward by ``s = 1 + m``
and shocks the option vols up, not at all, or down (:class:`~margin.methodology.ScenarioConfig`
has the formulas). The risk array of ``u`` holds, per instrument of ``u`` and scenario, the
**weighted** P&L in USD of one contract (weight 1 on the standard grid, the dampening weight on
tail moves), so a position's weighted scenario P&L is ``quantity x risk``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from margin.book import Book
from margin.instruments import (
    InstrumentTable,
    instrument_greeks,
    instrument_mtm,
    instrument_pnl,
)
from margin.methodology import Methodology, ScenarioConfig
from margin.typing import FloatArray, IntArray

__all__ = [
    "RiskArrays",
    "ScenarioSet",
    "build_risk_arrays",
    "filtered_historical_moves",
    "linear_coefficients",
    "scenario_set",
    "shocked_vols",
    "vol_shock_multiplier",
]

VOL_UP, VOL_NONE, VOL_DOWN = 1, 0, -1


@dataclass(frozen=True)
class ScenarioSet:
    """Scenarios of one underlying: spot move (decimal), vol mode (+1/0/-1), P&L weight."""

    underlying: str
    spot_moves: FloatArray
    vol_mode: IntArray
    weights: FloatArray

    def __len__(self) -> int:
        return len(self.spot_moves)

    @property
    def labels(self) -> tuple[str, ...]:
        """Readable scenario names, e.g. ``BTC:-16.0%:vol_up`` or ``BTC:+300.0%:vol_up:w0.04``."""
        names = {VOL_UP: "vol_up", VOL_NONE: "vol_same", VOL_DOWN: "vol_down"}
        out = []
        for m, v, w in zip(self.spot_moves, self.vol_mode, self.weights, strict=True):
            label = f"{self.underlying}:{m * 100:+.1f}%:{names[int(v)]}"
            out.append(label if w == 1.0 else f"{label}:w{w:g}")
        return tuple(out)


def scenario_set(config: ScenarioConfig, underlying: str) -> ScenarioSet:
    """Standard grid (price points x vol up/same/down) followed by the weighted tail moves.

    The price points are ``n_price_steps`` even steps down to ``-range_down``, 0, and
    ``n_price_steps`` even steps up to ``+range_up`` (one ``linspace`` when symmetric).
    """
    n = config.n_price_steps
    if config.is_symmetric:
        grid = np.linspace(-config.price_range, config.price_range, 2 * n + 1)
    else:
        down = np.linspace(-config.range_down, 0.0, n + 1)
        grid = np.concatenate([down, np.linspace(0.0, config.range_up, n + 1)[1:]])
    moves = np.repeat(grid, 3)
    modes = np.tile([VOL_UP, VOL_NONE, VOL_DOWN], grid.size)
    weights = np.ones(moves.size)
    tails = np.asarray(config.tail_moves, dtype=np.float64)
    return ScenarioSet(
        underlying=underlying,
        spot_moves=np.concatenate([moves, tails]),
        vol_mode=np.concatenate([modes, np.full(tails.size, VOL_UP)]).astype(np.intp),
        weights=np.concatenate([weights, np.asarray(config.tail_weights, dtype=np.float64)]),
    )


def vol_shock_multiplier(dte_days: FloatArray, config: ScenarioConfig) -> FloatArray:
    """``(30 / max(DTE, floor)) ** power`` with the short-term power below 30 days."""
    dte = np.maximum(np.nan_to_num(dte_days, nan=30.0), config.dte_floor_days)
    power = np.where(dte < 30.0, config.short_term_power, config.long_term_power)
    return np.asarray((30.0 / dte) ** power)


def shocked_vols(
    vol: FloatArray, dte_days: FloatArray, vol_mode: IntArray, config: ScenarioConfig
) -> FloatArray:
    """Shocked vols, shape (n_instruments, n_scenarios), from vols (n,) and modes (k,)."""
    mult = vol_shock_multiplier(dte_days, config)[:, None]
    v = vol[:, None]
    up = np.maximum(v * (1.0 + config.vol_up * mult), config.min_vol_up)
    down = v * np.maximum(1.0 - config.vol_down * mult, 0.0)
    mode = vol_mode[None, :]
    out = np.where(mode == VOL_UP, up, np.where(mode == VOL_DOWN, down, v))
    return np.asarray(np.maximum(out, config.min_vol))


@dataclass(frozen=True)
class RiskArrays:
    """Everything per instrument / asset the engine needs, built once per book and methodology.

    Attributes
    ----------
    sets : scenario set per underlying (book order).
    inst_of : per underlying, the instrument columns it owns.
    risk_inst_scen : per underlying, weighted P&L (USD) per contract, (n_inst_u, k_u).
    asset_of : per underlying, the collateral asset columns shocked with it.
    risk_asset_scen : per underlying, weighted P&L (USD) per asset unit, (n_assets_u, k_u).
    delta_inst, gamma_inst, vega_inst : Greeks per contract (see
        :func:`margin.instruments.instrument_greeks`).
    delta_asset : coins per asset unit (1 for a coin shocked in the scenarios, else 0).
    mtm_inst : USD value per contract (spot and options).
    notional_inst : ``|contract size in coins| x index`` (USD) per contract.
    joint_inst, joint_asset : weighted-free P&L per contract / asset unit under the joint
        scenarios, (n, n_joint), or None when the offset mode is not ``joint``.
    """

    sets: tuple[ScenarioSet, ...]
    inst_of: tuple[IntArray, ...]
    risk_inst_scen: tuple[FloatArray, ...]
    asset_of: tuple[IntArray, ...]
    risk_asset_scen: tuple[FloatArray, ...]
    delta_inst: FloatArray
    gamma_inst: FloatArray
    vega_inst: FloatArray
    delta_asset: FloatArray
    mtm_inst: FloatArray
    notional_inst: FloatArray
    joint_inst: FloatArray | None
    joint_asset: FloatArray | None

    @property
    def n_scenarios(self) -> int:
        """Total number of scenario columns over all underlyings."""
        return sum(len(s) for s in self.sets)

    @property
    def labels(self) -> tuple[str, ...]:
        """Scenario labels in global column order (underlying blocks in book order)."""
        return tuple(label for s in self.sets for label in s.labels)


def build_risk_arrays(book: Book, methodology: Methodology) -> RiskArrays:
    """Full revaluation of every instrument (and coin collateral) in every scenario."""
    table = book.instruments
    mkt = book.market
    index_inst = mkt.index[table.underlying]
    rate_inst = mkt.rate[table.underlying]
    asset_und = book.asset_underlying()
    asset_price = book.asset_prices()
    shock_assets = methodology.collateral_in_scenarios
    sets, inst_of, risk_inst, asset_of, risk_asset = [], [], [], [], []
    for code, name in enumerate(mkt.underlyings):
        config = methodology.scenario_config(name)
        scen = scenario_set(config, name)
        rows = np.flatnonzero(table.underlying == code)
        sub = table.take(rows)
        spot_mult = np.broadcast_to(1.0 + scen.spot_moves, (rows.size, len(scen)))
        vols = shocked_vols(mkt.vol[rows], table.dte_days[rows], scen.vol_mode, config)
        pnl = instrument_pnl(
            sub, mkt.mark[rows], mkt.forward[rows], mkt.vol[rows], rate_inst[rows], spot_mult, vols
        )
        # Delta-one P&L is linear in the move: store it exactly as coefficient x move x weight
        # so the engine may aggregate those positions as one number per account.
        coef = linear_coefficients(sub, mkt.mark[rows])
        linear = coef[:, None] * (scen.spot_moves * scen.weights)[None, :]
        risk = np.where(sub.is_option[:, None], pnl * scen.weights[None, :], linear)
        sets.append(scen)
        inst_of.append(rows)
        risk_inst.append(np.ascontiguousarray(risk))
        a_rows = np.flatnonzero(asset_und == code) if shock_assets else np.empty(0, np.intp)
        asset_of.append(a_rows)
        risk_asset.append(
            np.ascontiguousarray(
                asset_price[a_rows, None] * scen.spot_moves[None, :] * scen.weights[None, :]
            )
        )
    delta, gamma, vega = instrument_greeks(
        table, mkt.mark, mkt.forward, index_inst, mkt.vol, rate_inst
    )
    delta_asset = np.where((asset_und >= 0) & shock_assets, 1.0, 0.0)
    coins = np.where(table.is_inverse, table.contract_size / index_inst, table.contract_size)
    joint_inst, joint_asset = _joint_arrays(book, methodology, rate_inst)
    return RiskArrays(
        sets=tuple(sets),
        inst_of=tuple(inst_of),
        risk_inst_scen=tuple(risk_inst),
        asset_of=tuple(asset_of),
        risk_asset_scen=tuple(risk_asset),
        delta_inst=delta,
        gamma_inst=gamma,
        vega_inst=vega,
        delta_asset=delta_asset,
        mtm_inst=instrument_mtm(table, mkt.mark),
        notional_inst=coins * index_inst,
        joint_inst=joint_inst,
        joint_asset=joint_asset,
    )


def filtered_historical_moves(
    log_returns: ArrayLike,
    current_vol: ArrayLike | None = None,
    *,
    decay: float = 0.94,
    seed_days: int = 20,
) -> tuple[tuple[float, ...], ...]:
    """Joint scenarios by filtered historical simulation, for ``OffsetConfig.joint_moves``.

    Parameters
    ----------
    log_returns : array_like, shape (n_days, n_underlyings)
        Decimal log returns over the margin horizon (e.g. daily), rows in time order, columns in
        the order of ``OffsetConfig.underlyings``; no NaN.
    current_vol : array_like, shape (n_underlyings,), optional
        Volatility to rescale to (same horizon, decimal); default the last EWMA volatility.
    decay : float
        EWMA (RiskMetrics) decay of the variance filter.
    seed_days : int
        Days whose sample variance seeds the filter.

    Returns
    -------
    tuple of tuples
        One row per day after the seed: ``exp(r_t * current_vol / vol_t) - 1`` per underlying,
        where ``vol_t`` is the EWMA volatility known before day ``t`` (no look-ahead).
    """
    r = np.asarray(log_returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] <= seed_days or not np.isfinite(r).all():
        raise ValueError(
            f"log_returns must be a finite (days x underlyings) array longer than {seed_days} days"
        )
    var = np.empty_like(r)
    v = r[:seed_days].var(axis=0) + 1e-18
    for t in range(r.shape[0]):
        var[t] = v
        v = decay * v + (1.0 - decay) * r[t] ** 2
    sigma_t = np.sqrt(var[seed_days:])
    now = np.sqrt(v) if current_vol is None else np.asarray(current_vol, dtype=np.float64)
    moves = np.expm1(r[seed_days:] / sigma_t * now)
    return tuple(tuple(float(x) for x in row) for row in moves)


def linear_coefficients(table: InstrumentTable, mark: FloatArray) -> FloatArray:
    """USD P&L per contract per unit of decimal move for delta-one instruments (0 for options).

    Spot, linear perps and linear futures: ``size x mark``; inverse contracts: ``size`` (USD
    notional; the coin P&L converted at the shocked price is ``size x m``, see
    :mod:`margin.instruments`).
    """
    coef = np.where(table.is_inverse, table.contract_size, table.contract_size * mark)
    return np.where(table.is_option, 0.0, coef)


def _joint_arrays(
    book: Book, methodology: Methodology, rate_inst: FloatArray
) -> tuple[FloatArray | None, FloatArray | None]:
    offsets = methodology.offsets
    if offsets.mode != "joint":
        return None, None
    moves = np.asarray(offsets.joint_moves, dtype=np.float64)  # (n_joint, n_offset_und)
    col_of = {u: j for j, u in enumerate(offsets.underlyings)}
    table = book.instruments
    mkt = book.market
    und_moves = np.zeros((len(mkt.underlyings), moves.shape[0]))
    for code, name in enumerate(mkt.underlyings):
        if name in col_of:
            und_moves[code] = moves[:, col_of[name]]
    spot_mult = 1.0 + und_moves[table.underlying]
    vols = np.broadcast_to(mkt.vol[:, None], spot_mult.shape)
    joint_inst = instrument_pnl(table, mkt.mark, mkt.forward, mkt.vol, rate_inst, spot_mult, vols)
    asset_und = book.asset_underlying()
    joint_asset = np.zeros((len(book.assets), moves.shape[0]))
    if methodology.collateral_in_scenarios:
        coins = asset_und >= 0
        joint_asset[coins] = book.asset_prices()[coins, None] * und_moves[asset_und[coins]]
    return np.ascontiguousarray(joint_inst), joint_asset
