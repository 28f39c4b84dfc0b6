"""Vectorized cross-margin engine: positions x risk arrays, offsets, floors, add-ons, rounding.

For a chunk of accounts with positions ``P`` (CSR accounts x instruments) and collateral ``C``
(CSR accounts x assets), per underlying ``u``::

    pnl_u   = P[:, inst_u] @ R_u + C[:, asset_u] @ A_u        (accounts x scenarios of u)
    L_u     = max(0, -min_k pnl_u[:, k])                        worst weighted loss
    S       = sum_u L_u                                          stand-alone sum
    P_x     = offset measure (correlation or joint scenarios)    portfolio loss
    cross   = S - cap * max(S - P_x, 0)                          EMIR Art. 27 cap
    scen    = max(cross, min-delta floor, short-option minimum)
    IM      = im_loss_factor * scen + IM add-ons
    MM      = mm_loss_factor * scen + MM add-ons

No Python loop runs over accounts or positions: each chunk is a handful of sparse products.
See ``docs/engine.md``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from margin.addons import (
    AddOnArrays,
    build_addon_arrays,
    concentration_addon,
    min_delta_floor,
    naked_short_addon,
)
from margin.book import Book
from margin.methodology import Methodology
from margin.result import MarginResult
from margin.scenarios import RiskArrays, build_risk_arrays
from margin.typing import BoolArray, FloatArray

__all__ = [
    "MarginContext",
    "compute_margin",
    "compute_margin_sharded",
    "evaluate",
    "prepare",
    "round_down",
    "round_up",
]

DEFAULT_CHUNK = 65_536


@dataclass(frozen=True)
class MarginContext:
    """Everything that depends on the instruments and market but not on the accounts.

    Built once per (book, methodology) by :func:`prepare`; reused by every account chunk,
    by shards and by what-if queries.
    """

    methodology: Methodology
    risk: RiskArrays
    addons: AddOnArrays
    correlation: FloatArray
    offset_listed: BoolArray
    iso_inst_long: FloatArray
    iso_inst_short: FloatArray
    iso_asset_long: FloatArray
    iso_asset_short: FloatArray
    underlyings: tuple[str, ...]

    @property
    def scenario_labels(self) -> tuple[str, ...]:
        """Labels of the global scenario columns."""
        return self.risk.labels


def prepare(book: Book, methodology: Methodology) -> MarginContext:
    """Risk arrays, add-on vectors and per-contract isolated margins for ``book``."""
    risk = build_risk_arrays(book, methodology)
    addons = build_addon_arrays(book, methodology, risk)
    names = book.market.underlyings
    n_und = len(names)
    offsets = methodology.offsets
    listed = np.array([u in offsets.underlyings for u in names], dtype=bool)
    corr = np.eye(n_und)
    if offsets.mode == "correlation" and offsets.correlation:
        pos = {u: i for i, u in enumerate(offsets.underlyings)}
        given = np.asarray(offsets.correlation, dtype=np.float64)
        for a, ua in enumerate(names):
            for b, ub in enumerate(names):
                if ua in pos and ub in pos:
                    corr[a, b] = given[pos[ua], pos[ub]]
    if offsets.mode == "correlation" and not offsets.correlation:
        listed[:] = False
    if offsets.mode == "none":
        listed[:] = False
    iso = _isolated_units(book, methodology, risk, addons)
    return MarginContext(
        methodology=methodology,
        risk=risk,
        addons=addons,
        correlation=corr,
        offset_listed=listed,
        iso_inst_long=iso[0],
        iso_inst_short=iso[1],
        iso_asset_long=iso[2],
        iso_asset_short=iso[3],
        underlyings=names,
    )


def _isolated_units(
    book: Book, methodology: Methodology, risk: RiskArrays, addons: AddOnArrays
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Stand-alone IM of one long / one short contract (and asset unit) alone in an account."""
    cfg = methodology.addons
    f_im = methodology.im_loss_factor
    table = book.instruments
    n_inst, n_assets = len(table), len(book.assets)
    loss_long, loss_short = np.zeros(n_inst), np.zeros(n_inst)
    a_long, a_short = np.zeros(n_assets), np.zeros(n_assets)
    for cols, r, a_cols, ra in zip(
        risk.inst_of, risk.risk_inst_scen, risk.asset_of, risk.risk_asset_scen, strict=True
    ):
        if r.shape[1]:
            loss_long[cols] = np.maximum(-r.min(axis=1), 0.0)
            loss_short[cols] = np.maximum(r.max(axis=1), 0.0)
            a_long[a_cols] = np.maximum(-ra.min(axis=1), 0.0)
            a_short[a_cols] = np.maximum(ra.max(axis=1), 0.0)
    index_inst = book.market.index[table.underlying]
    floor_inst = cfg.min_delta_net * np.abs(risk.delta_inst) * index_inst
    asset_und = book.asset_underlying()
    asset_index = np.where(asset_und >= 0, book.market.index[np.maximum(asset_und, 0)], 0.0)
    floor_asset = cfg.min_delta_net * np.abs(risk.delta_asset) * asset_index
    naked = np.where(table.is_option, cfg.short_option_im * table.contract_size * index_inst, 0.0)
    common = addons.perp_im + addons.oracle_inst
    iso_long = f_im * np.maximum(loss_long, floor_inst) + common
    iso_short = f_im * np.maximum.reduce([loss_short, floor_inst, addons.som_unit]) + common + naked
    common_a = addons.oracle_asset
    iso_a_long = f_im * np.maximum(a_long, floor_asset) + common_a + addons.collateral_im_extra
    iso_a_short = f_im * np.maximum(a_short, floor_asset) + common_a
    return iso_long, iso_short, iso_a_long, iso_a_short


def _decimals(precision: float) -> int:
    return max(0, int(np.ceil(-np.log10(precision)))) + 2


def round_up(values: FloatArray, precision: float) -> FloatArray:
    """Round up to a multiple of ``precision`` (0: unchanged); noise below 1e-6 units ignored."""
    if precision <= 0:
        return values
    steps = np.ceil(np.round(values / precision, 6))
    return np.round(steps * precision, _decimals(precision)) + 0.0


def round_down(values: FloatArray, precision: float) -> FloatArray:
    """Round down to a multiple of ``precision`` (0: unchanged); noise below 1e-6 units ignored."""
    if precision <= 0:
        return values
    steps = np.floor(np.round(values / precision, 6))
    return np.round(steps * precision, _decimals(precision)) + 0.0


def _abs(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = matrix.copy()
    out.data = np.abs(out.data)
    return out


def _dense(x: object) -> FloatArray:
    if sp.issparse(x):
        return np.asarray(x.toarray())  # type: ignore[attr-defined]
    return np.asarray(x)


def evaluate(
    ctx: MarginContext, positions: sp.csr_matrix, collateral: sp.csr_matrix
) -> dict[str, np.ndarray]:
    """Margin figures of the accounts given as rows of ``positions`` and ``collateral``.

    Returns the unrounded and rounded arrays that :class:`MarginResult` holds (without names).
    """
    m = ctx.methodology
    risk, add = ctx.risk, ctx.addons
    n = positions.shape[0]
    n_und = len(ctx.underlyings)
    loss = np.zeros((n, n_und))
    direction = np.zeros((n, n_und))
    worst_val = np.full(n, np.inf)
    worst_idx = np.zeros(n, dtype=np.intp)
    start = 0
    for u in range(n_und):
        scen = risk.sets[u]
        k = len(scen)
        pnl = np.asarray(positions[:, risk.inst_of[u]] @ risk.risk_inst_scen[u])
        if risk.asset_of[u].size:
            pnl = pnl + _dense(collateral[:, risk.asset_of[u]] @ risk.risk_asset_scen[u])
        arg = np.argmin(pnl, axis=1)
        low = pnl[np.arange(n), arg]
        loss[:, u] = np.maximum(-low, 0.0)
        direction[:, u] = -np.sign(scen.spot_moves[arg])
        better = low < worst_val
        worst_val = np.where(better, low, worst_val)
        worst_idx = np.where(better, start + arg, worst_idx)
        start += k
    standalone = loss.sum(axis=1)
    cross = _offset(ctx, positions, collateral, loss, direction, standalone)

    abs_p = _abs(positions)
    abs_c = _abs(collateral)
    net = _dense(positions @ add.delta_mat) + _dense(collateral @ add.delta_asset_mat)
    gross = _dense(abs_p @ _abs(add.delta_mat)) + _dense(abs_c @ _abs(add.delta_asset_mat))
    floor_delta = min_delta_floor(net, gross, add.index, m.addons)
    short_qty = 0.5 * (abs_p @ add.som_unit - positions @ add.som_unit)
    scen_part = np.maximum.reduce([cross, floor_delta, short_qty])

    perp_im = abs_p @ add.perp_im
    perp_mm = abs_p @ add.perp_mm
    naked_im = naked_short_addon(positions, add, m.addons.short_option_im)
    naked_mm = naked_short_addon(positions, add, m.addons.short_option_mm)
    oracle = abs_p @ add.oracle_inst + abs_c @ add.oracle_asset
    conc = concentration_addon(positions, add.concentration_unit)
    c_long = 0.5 * (abs_c + collateral)
    c_short = 0.5 * (collateral - abs_c)
    coll_extra = c_long @ add.collateral_im_extra
    im = m.im_loss_factor * scen_part + perp_im + naked_im + oracle + conc + coll_extra
    mm = m.mm_loss_factor * scen_part + perp_mm + naked_mm + m.addons.concentration_mm_share * conc

    coll_value = c_long @ add.collateral_long + c_short @ add.collateral_short
    mtm = positions @ risk.mtm_inst
    p_long = 0.5 * (abs_p + positions)
    p_short = 0.5 * (abs_p - positions)
    isolated = (
        p_long @ ctx.iso_inst_long
        + p_short @ ctx.iso_inst_short
        + c_long @ ctx.iso_asset_long
        - c_short @ ctx.iso_asset_short
        + conc
    )
    prec = m.settlement_precision
    im_r = round_up(np.asarray(im), prec)
    mm_r = round_up(np.asarray(mm), prec)
    coll_r = round_down(np.asarray(coll_value), prec)
    equity = round_down(coll_r + np.asarray(mtm), prec)
    liquidatable = equity < mm_r
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(equity > 0, mm_r / np.where(equity > 0, equity, 1.0), np.inf)
    ratio = np.where((equity <= 0) & (mm_r == 0) & (equity == 0), 0.0, ratio)
    return {
        "im": im_r,
        "mm": mm_r,
        "collateral_value": coll_r,
        "mtm": np.asarray(mtm, dtype=np.float64),
        "equity": equity,
        "margin_ratio": ratio,
        "liquidatable": liquidatable,
        "worst_scenario": worst_idx,
        "scenario_part": scen_part,
        "standalone_sum": standalone,
        "isolated_im": np.asarray(isolated, dtype=np.float64),
        "delta": net,
        "gamma": _dense(positions @ add.gamma_mat),
        "vega": _dense(positions @ add.vega_mat),
    }


def _offset(
    ctx: MarginContext,
    positions: sp.csr_matrix,
    collateral: sp.csr_matrix,
    loss: FloatArray,
    direction: FloatArray,
    standalone: FloatArray,
) -> FloatArray:
    """Cross scenario requirement after offsets, capped (never above the stand-alone sum)."""
    offsets = ctx.methodology.offsets
    listed = ctx.offset_listed
    if offsets.mode == "none" or not listed.any():
        return standalone
    unlisted = loss[:, ~listed].sum(axis=1)
    if offsets.mode == "correlation":
        x = (direction * loss)[:, listed]
        sq = loss[:, listed] ** 2
        corr = ctx.correlation[np.ix_(listed, listed)]
        off_diag = corr - np.diag(np.diag(corr))
        quad = sq.sum(axis=1) + np.einsum("ij,jk,ik->i", x, off_diag, x)
        portfolio = np.sqrt(np.maximum(quad, 0.0)) + unlisted
    else:
        assert ctx.risk.joint_inst is not None and ctx.risk.joint_asset is not None
        pnl = np.asarray(positions @ ctx.risk.joint_inst)
        pnl = pnl + _dense(collateral @ ctx.risk.joint_asset)
        portfolio = _tail_loss(-pnl, offsets.confidence, offsets.measure) + unlisted
    cap = offsets.cap
    if offsets.cap_basis == "diversification":
        cross = standalone - cap * np.maximum(standalone - portfolio, 0.0)
    else:
        cross = np.maximum(portfolio, (1.0 - cap) * standalone)
    return np.minimum(cross, standalone)


def _tail_loss(losses: FloatArray, confidence: float, measure: str) -> FloatArray:
    """VaR (the m-th largest loss) or ES (mean of the m largest), ``m = ceil((1-c) n)``."""
    n = losses.shape[1]
    m = max(1, int(np.ceil((1.0 - confidence) * n - 1e-9)))
    top = -np.partition(-losses, m - 1, axis=1)[:, :m]
    value = top.min(axis=1) if measure == "var" else top.mean(axis=1)
    return np.maximum(value, 0.0)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def compute_margin(
    book: Book,
    methodology: Methodology,
    *,
    context: MarginContext | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    n_threads: int = 2,
) -> MarginResult:
    """Margin of every account of ``book`` under ``methodology``.

    Parameters
    ----------
    book, methodology
        The accounts and the rules.
    context
        A :func:`prepare`-d context to reuse (must come from the same book's instruments and
        market and the same methodology).
    chunk_size
        Accounts per chunk (bounds memory: a chunk holds ``chunk_size x scenarios`` floats).
    n_threads
        Worker threads over chunks (SciPy's sparse products release the GIL).

    Results do not depend on ``chunk_size`` or ``n_threads``: every account's figures are
    computed from its own row with the same operations in the same order.
    """
    ctx = context if context is not None else prepare(book, methodology)
    slices = list(_chunks(book.n_accounts, chunk_size)) or [slice(0, 0)]

    def work(rows: slice) -> dict[str, np.ndarray]:
        return evaluate(ctx, book.positions[rows], book.collateral[rows])

    if n_threads > 1 and len(slices) > 1:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            parts = list(pool.map(work, slices))
    else:
        parts = [work(s) for s in slices]
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return MarginResult(
        accounts=book.accounts,
        underlyings=ctx.underlyings,
        scenario_labels=ctx.scenario_labels,
        **merged,  # type: ignore[arg-type]
    )


def compute_margin_sharded(
    book: Book,
    methodology: Methodology,
    n_shards: int,
    *,
    map_fn: Callable[[Callable[[Book], MarginResult], Iterable[Book]], Iterable[MarginResult]]
    | None = None,
) -> MarginResult:
    """Compute the book in ``n_shards`` contiguous account shards and stack the results.

    Each shard is a self-contained :class:`Book` computed by :func:`compute_margin`, so
    ``map_fn`` may ship shards to other processes or a Dask cluster (default: the built-in
    ``map``). The result is identical to ``compute_margin(book, methodology)``.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    bounds = np.linspace(0, book.n_accounts, n_shards + 1).round().astype(np.intp)
    shards = [book.select_accounts(slice(a, b)) for a, b in itertools.pairwise(bounds)]
    mapper = map_fn if map_fn is not None else map

    def run(shard: Book) -> MarginResult:
        return compute_margin(shard, methodology, n_threads=1)

    return MarginResult.concat(list(mapper(run, shards)))
