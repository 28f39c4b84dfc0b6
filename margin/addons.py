"""Add-ons and floors: per-contract vectors built once, applied to accounts by sparse products.

Every add-on here is a function of the positions that is either **additive** over positions
(perp contingency, oracle confidence, concentration, collateral haircut, short-option minimum)
or **sub-additive** (naked shorts per strike, minimum delta charge), so an account's cross
margin never exceeds the sum of its positions' isolated margins. Amounts are USD.

Formulas (``q`` signed contracts, ``S`` index, ``N`` USD notional per contract):

- perp contingency: ``pct x |q| x N`` on perpetuals (IM and MM percentages);
- naked shorts per strike: per (underlying, expiry, strike) the net option quantity in coins
  (calls and puts pooled), ``pct x max(-net, 0) x S``;
- oracle confidence (IM only): ``(1 - c) x oracle_margin x |q| x N`` where the confidence
  ``c = min(instrument, underlying)`` is below the threshold; coin collateral likewise;
- concentration (square-root impact form): ``k x |q| x N x sqrt(|q| / liquidity)``;
- minimum delta charge (floor on the scenario part): ``sum_u (u |net_u| + h (gross_u -
  |net_u|) / 2) x S_u`` with deltas in coins;
- short-option minimum (floor): ``pct x sum max(-q, 0) x coins x S`` over options;
- collateral: valued at ``price x (1 - haircut_mm)`` (borrowings at full price), plus an IM
  add-on ``price x haircut_im_extra`` per unit held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from margin.book import Book
from margin.instruments import InstrumentTable
from margin.methodology import AddOnConfig, Methodology
from margin.scenarios import RiskArrays
from margin.typing import FloatArray, IntArray

__all__ = [
    "AddOnArrays",
    "build_addon_arrays",
    "min_delta_floor",
    "strike_groups",
]


@dataclass(frozen=True)
class AddOnArrays:
    """Per-contract and per-asset vectors (USD per unit) and helper matrices.

    ``delta_mat``/``gamma_mat``/``vega_mat`` are CSR instruments x underlyings holding each
    instrument's Greek in its underlying's column; ``delta_asset_mat`` likewise for assets.
    ``short_group`` is CSR instruments x strike groups holding coins per option contract.
    """

    perp_im: FloatArray
    perp_mm: FloatArray
    oracle_inst: FloatArray
    oracle_asset: FloatArray
    concentration_unit: FloatArray
    som_unit: FloatArray
    short_group: sp.csr_matrix
    group_index: FloatArray
    delta_mat: sp.csr_matrix
    gamma_mat: sp.csr_matrix
    vega_mat: sp.csr_matrix
    delta_asset_mat: sp.csr_matrix
    index: FloatArray
    collateral_long: FloatArray
    collateral_short: FloatArray
    collateral_im_extra: FloatArray


def _by_underlying(values: FloatArray, codes: np.ndarray, n_und: int) -> sp.csr_matrix:
    rows = np.arange(values.size)
    keep = codes >= 0
    return sp.csr_matrix((values[keep], (rows[keep], codes[keep])), shape=(values.size, n_und))


def strike_groups(table: InstrumentTable) -> tuple[IntArray, int]:
    """Strike group of every option (same underlying, expiry and strike; -1 for non-options)
    and the number of groups."""
    group = np.full(len(table), -1, dtype=np.intp)
    rows = np.flatnonzero(table.is_option)
    if rows.size == 0:
        return group, 0
    keys = np.stack([table.underlying[rows], table.expiry_years[rows], table.strike[rows]], axis=1)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    group[rows] = np.asarray(inverse).ravel()
    return group, int(group.max()) + 1


def build_addon_arrays(book: Book, methodology: Methodology, risk: RiskArrays) -> AddOnArrays:
    """Per-contract add-on vectors for ``book`` under ``methodology``."""
    cfg: AddOnConfig = methodology.addons
    table = book.instruments
    mkt = book.market
    n_und = len(mkt.underlyings)
    index_inst = mkt.index[table.underlying]
    notional = risk.notional_inst
    is_perp = table.is_perp
    conf_inst = np.minimum(mkt.confidence, mkt.underlying_confidence[table.underlying])
    low = conf_inst < cfg.oracle_threshold
    oracle_inst = np.where(low, (1.0 - conf_inst) * cfg.oracle_margin * notional, 0.0)
    asset_und = book.asset_underlying()
    prices = book.asset_prices()
    conf_asset = np.where(asset_und >= 0, mkt.underlying_confidence[np.maximum(asset_und, 0)], 1.0)
    oracle_asset = np.where(
        conf_asset < cfg.oracle_threshold, (1.0 - conf_asset) * cfg.oracle_margin * prices, 0.0
    )
    liquidity = mkt.liquidity if mkt.liquidity is not None else np.full(len(table), np.inf)
    conc = np.where(np.isfinite(liquidity), cfg.concentration * notional / np.sqrt(liquidity), 0.0)
    is_opt = table.is_option
    coins = table.contract_size
    som = np.where(is_opt, cfg.short_option_minimum * coins * index_inst, 0.0)
    group, n_groups = strike_groups(table)
    opt_rows = np.flatnonzero(group >= 0)
    short_group = sp.csr_matrix(
        (coins[opt_rows], (opt_rows, group[opt_rows])), shape=(len(table), n_groups)
    )
    group_index = np.zeros(n_groups)
    group_index[group[opt_rows]] = index_inst[opt_rows]
    h_mm = np.array([methodology.haircuts_mm.get(a, 0.0) for a in book.assets])
    h_im = np.array([methodology.haircuts_im_extra.get(a, 0.0) for a in book.assets])
    return AddOnArrays(
        perp_im=np.where(is_perp, cfg.perp_im * notional, 0.0),
        perp_mm=np.where(is_perp, cfg.perp_mm * notional, 0.0),
        oracle_inst=oracle_inst,
        oracle_asset=oracle_asset,
        concentration_unit=conc,
        som_unit=som,
        short_group=short_group,
        group_index=group_index,
        delta_mat=_by_underlying(risk.delta_inst, table.underlying, n_und),
        gamma_mat=_by_underlying(risk.gamma_inst, table.underlying, n_und),
        vega_mat=_by_underlying(risk.vega_inst, table.underlying, n_und),
        delta_asset_mat=_by_underlying(risk.delta_asset, asset_und, n_und),
        index=mkt.index.copy(),
        collateral_long=prices * (1.0 - h_mm),
        collateral_short=prices.copy(),
        collateral_im_extra=prices * h_im,
    )


def min_delta_floor(
    net: FloatArray, gross: FloatArray, index: FloatArray, cfg: AddOnConfig
) -> FloatArray:
    """Minimum delta charge per account from net and gross coin deltas (accounts x und)."""
    abs_net = np.abs(net)
    hedged = np.maximum(gross - abs_net, 0.0) / 2.0
    per_und = (cfg.min_delta_net * abs_net + cfg.min_delta_hedged * hedged) * index[None, :]
    return np.asarray(per_und.sum(axis=1))
