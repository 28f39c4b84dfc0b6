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

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from margin.addons import AddOnArrays, build_addon_arrays, min_delta_floor, strike_groups
from margin.book import Book
from margin.instruments import InstrumentTable
from margin.methodology import Methodology
from margin.parallel import run_chunks
from margin.result import MarginResult
from margin.scenarios import RiskArrays, build_risk_arrays, linear_coefficients
from margin.typing import BoolArray, FloatArray, IntArray

__all__ = [
    "MarginContext",
    "compute_margin",
    "compute_margin_sharded",
    "evaluate",
    "instrument_categories",
    "position_layout",
    "prepare",
    "round_down",
    "round_up",
]

DEFAULT_CHUNK = 32_768

#: arrays :func:`evaluate` returns: dtype and whether there is one column per underlying
RESULT_ARRAYS: dict[str, tuple[type, bool]] = {
    "im": (np.float64, False),
    "mm": (np.float64, False),
    "collateral_value": (np.float64, False),
    "mtm": (np.float64, False),
    "equity": (np.float64, False),
    "margin_ratio": (np.float64, False),
    "liquidatable": (np.bool_, False),
    "worst_scenario": (np.intp, False),
    "scenario_part": (np.float64, False),
    "standalone_sum": (np.float64, False),
    "isolated_im": (np.float64, False),
    "delta": (np.float64, True),
    "gamma": (np.float64, True),
    "vega": (np.float64, True),
}


ScanPrecision = Literal["float32", "float64"]

#: per-contract columns multiplied by signed quantities / by |quantities| (a category keeps
#: only the columns that are not identically zero for it)
SIGNED_COLUMNS = ("delta", "gamma", "vega", "mtm", "lin", "som", "iso_diff")
ABS_COLUMNS = ("abs_delta", "perp_im", "perp_mm", "oracle", "som", "iso_sum")


@dataclass(frozen=True)
class _Block:
    """Arrays of one instrument category (the delta-one or the option instruments of one
    underlying), in the category's local column order."""

    underlying: int
    is_option: bool
    signed: FloatArray  # (n_local, n_signed): multiplied by signed quantities
    absolute: FloatArray  # (n_local, n_abs): multiplied by |quantities|
    signed_names: tuple[str, ...]
    abs_names: tuple[str, ...]
    n_local: int
    risk64: FloatArray  # options: (n_local, k) weighted P&L per contract; else (0, k)
    scan64: FloatArray  # risk64 with the weighted moves appended as a last row
    scan32: NDArray[np.float32]  # the same in float32 for the single-precision scan
    group: IntArray  # (n_local,) strike group of options, -1 else
    coins: FloatArray  # (n_local,) coins per contract
    concentration: FloatArray  # (n_local,) concentration unit


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
    blocks: tuple[_Block, ...]
    cat_of_col: NDArray[np.uint8]
    local_col: IntArray
    moves: tuple[FloatArray, ...]
    move64: tuple[FloatArray, ...]
    coll_signed: FloatArray
    coll_abs: FloatArray
    n_groups: int
    scan_precision: ScanPrecision

    @property
    def scenario_labels(self) -> tuple[str, ...]:
        """Labels of the global scenario columns."""
        return self.risk.labels


def prepare(
    book: Book, methodology: Methodology, *, scan_precision: ScanPrecision = "float64"
) -> MarginContext:
    """Risk arrays, add-on vectors and per-contract isolated margins for ``book``.

    ``scan_precision="float64"`` (default) scans the option scenario P&L in double precision:
    every account gets its exact worst scenario. ``"float32"`` scans in single precision and
    recomputes the selected scenario's loss in double precision, which may pick a scenario
    within float32 rounding of the worst (see ``docs/engine.md``).
    """
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
    blocks, cat_of_col, local_col = _blocks(book, risk, addons, iso[0], iso[1])
    moves = tuple(sc.spot_moves for sc in risk.sets)
    move64 = tuple(sc.spot_moves * sc.weights for sc in risk.sets)
    coll_signed, coll_abs = _collateral_matrices(book, risk, addons, iso[2], iso[3])
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
        blocks=blocks,
        cat_of_col=cat_of_col,
        local_col=local_col,
        moves=moves,
        move64=move64,
        coll_signed=coll_signed,
        coll_abs=coll_abs,
        n_groups=addons.short_group.shape[1],
        scan_precision=scan_precision,
    )


def _blocks(
    book: Book,
    risk: RiskArrays,
    addons: AddOnArrays,
    iso_long: FloatArray,
    iso_short: FloatArray,
) -> tuple[tuple[_Block, ...], NDArray[np.uint8], IntArray]:
    """Categories ``2u`` (delta-one of underlying u) and ``2u + 1`` (options of u)."""
    table = book.instruments
    n_inst = len(table)
    cat_of_col = np.zeros(n_inst, dtype=np.uint8)
    local_col = np.zeros(n_inst, dtype=np.intp)
    sg = addons.short_group.tocoo()
    group = np.full(n_inst, -1, dtype=np.intp)
    group[sg.row] = sg.col
    blocks = []
    for u, cols_u in enumerate(risk.inst_of):
        k = len(risk.sets[u])
        opt_u = table.is_option[cols_u]
        for is_opt in (False, True):
            sel = opt_u == is_opt
            cols = cols_u[sel]
            cat_of_col[cols] = 2 * u + int(is_opt)
            local_col[cols] = np.arange(cols.size)
            lin = np.zeros(cols.size)
            if not is_opt:
                lin = linear_coefficients(table.take(cols), book.market.mark[cols])
            signed_all = {
                "delta": risk.delta_inst[cols],
                "gamma": risk.gamma_inst[cols],
                "vega": risk.vega_inst[cols],
                "mtm": risk.mtm_inst[cols],
                "lin": lin,
                "som": addons.som_unit[cols],
                "iso_diff": 0.5 * (iso_long[cols] - iso_short[cols]),
            }
            abs_all = {
                "abs_delta": np.abs(risk.delta_inst[cols]),
                "perp_im": addons.perp_im[cols],
                "perp_mm": addons.perp_mm[cols],
                "oracle": addons.oracle_inst[cols],
                "som": addons.som_unit[cols],
                "iso_sum": 0.5 * (iso_long[cols] + iso_short[cols]),
            }
            signed_names = tuple(c for c in SIGNED_COLUMNS if signed_all[c].any())
            abs_names = tuple(c for c in ABS_COLUMNS if abs_all[c].any())
            signed = np.zeros((cols.size, len(signed_names)))
            for j, name in enumerate(signed_names):
                signed[:, j] = signed_all[name]
            absolute = np.zeros((cols.size, len(abs_names)))
            for j, name in enumerate(abs_names):
                absolute[:, j] = abs_all[name]
            r = risk.risk_inst_scen[u][sel] if is_opt else np.zeros((0, k))
            scan = np.vstack([r, (risk.sets[u].spot_moves * risk.sets[u].weights)[None, :]])
            blocks.append(
                _Block(
                    underlying=u,
                    is_option=is_opt,
                    signed=signed,
                    absolute=absolute,
                    signed_names=signed_names,
                    abs_names=abs_names,
                    n_local=int(cols.size),
                    risk64=np.ascontiguousarray(r),
                    scan64=scan,
                    scan32=scan.astype(np.float32),
                    group=group[cols],
                    coins=table.contract_size[cols],
                    concentration=addons.concentration_unit[cols],
                )
            )
    return tuple(blocks), cat_of_col, local_col


def _collateral_matrices(
    book: Book,
    risk: RiskArrays,
    addons: AddOnArrays,
    iso_long: FloatArray,
    iso_short: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Per-asset columns: signed ``[lin_u..., delta_u..., extra/2, value_mid, iso_diff]`` and
    absolute ``[|delta_u|..., oracle, extra/2, value_half_spread, iso_sum]``."""
    n_assets, n_und = len(book.assets), len(book.market.underlyings)
    lin = np.zeros((n_assets, n_und))
    delta = np.zeros((n_assets, n_und))
    for u, a_cols in enumerate(risk.asset_of):
        lin[a_cols, u] = book.asset_prices()[a_cols]
        delta[a_cols, u] = risk.delta_asset[a_cols]
    long_v, short_v = addons.collateral_long, addons.collateral_short
    extra = addons.collateral_im_extra
    signed = np.column_stack(
        [lin, delta, 0.5 * extra, 0.5 * (long_v + short_v), 0.5 * (iso_long - iso_short)]
    )
    absolute = np.column_stack(
        [
            np.abs(delta),
            addons.oracle_asset,
            0.5 * extra,
            0.5 * (long_v - short_v),
            0.5 * (iso_long + iso_short),
        ]
    )
    return signed, absolute


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


def _dense(x: object) -> FloatArray:
    if sp.issparse(x):
        return np.asarray(x.toarray())  # type: ignore[attr-defined]
    return np.asarray(x)


def _with_data(matrix: sp.csr_matrix, data: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix((data, matrix.indices, matrix.indptr), shape=matrix.shape, copy=False)


def instrument_categories(table: InstrumentTable) -> tuple[NDArray[np.uint8], IntArray]:
    """Category ``2u`` (delta-one of underlying u) or ``2u + 1`` (options of u) of every
    instrument, and its column within the category (instrument order)."""
    cat = (2 * table.underlying + table.is_option).astype(np.uint8)
    local = np.zeros(len(table), dtype=np.intp)
    for c in np.unique(cat):
        cols = np.flatnonzero(cat == c)
        local[cols] = np.arange(cols.size)
    return cat, local


@dataclass(frozen=True)
class _Entries:
    """Stored positions of one instrument category for a range of account rows.

    ``slot`` numbers the (account, strike group) pairs of option entries so naked shorts per
    strike net in one ``bincount``; delta-one categories have empty slot arrays.
    """

    data: FloatArray
    local: IntArray
    rows: IntArray
    indptr: IntArray
    slot: IntArray
    slot_indptr: IntArray
    slot_row: IntArray
    slot_group: IntArray
    n_cols: int

    def matrix(self) -> sp.csr_matrix:
        """The entries as a CSR matrix rows x category columns (no copy)."""
        n = self.indptr.size - 1
        return sp.csr_matrix(
            (self.data, self.local, self.indptr), shape=(n, self.n_cols), copy=False
        )

    def take_rows(self, a: int, b: int) -> _Entries:
        """Rows ``a:b`` re-based to 0 (views, no copy)."""
        e0, e1 = int(self.indptr[a]), int(self.indptr[b])
        s0, s1 = int(self.slot_indptr[a]), int(self.slot_indptr[b])
        return _Entries(
            data=self.data[e0:e1],
            local=self.local[e0:e1],
            rows=self.rows[e0:e1] - a,
            indptr=self.indptr[a : b + 1] - e0,
            slot=self.slot[e0:e1] - s0 if self.slot.size else self.slot,
            slot_indptr=self.slot_indptr[a : b + 1] - s0,
            slot_row=self.slot_row[s0:s1] - a,
            slot_group=self.slot_group[s0:s1],
            n_cols=self.n_cols,
        )


def position_layout(book: Book) -> tuple[_Entries, ...]:
    """Positions split by instrument category, built once per book and cached on it.

    Depends on the positions and the instruments' underlyings, kinds, expiries and strikes
    only, so it stays valid when prices or the methodology change.
    """
    cached = book.cache.get("layout")
    if cached is not None:
        return cached  # type: ignore[return-value]
    table = book.instruments
    positions = book.positions
    cat_of_col, local_col = instrument_categories(table)
    group_of_col, n_groups = strike_groups(table)
    n_cat = 2 * len(table.underlyings)
    n = positions.shape[0]
    row_ids = np.repeat(np.arange(n, dtype=np.intp), np.diff(positions.indptr))
    cat = cat_of_col[positions.indices]
    order = np.argsort(cat, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cat, minlength=n_cat))])
    n_cols = np.bincount(cat_of_col, minlength=n_cat)
    out = []
    for c in range(n_cat):
        seg = order[bounds[c] : bounds[c + 1]]
        rows = row_ids[seg]
        # int32 indices (when they fit) spare SciPy a conversion copy on every product
        index_dtype = np.int32 if positions.nnz < 2**31 - 1 else np.int64
        indptr = np.zeros(n + 1, dtype=index_dtype)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        cols = positions.indices[seg]
        empty = np.zeros(0, dtype=np.intp)
        slot, slot_indptr, slot_row, slot_group = empty, np.zeros(n + 1, np.int64), empty, empty
        if c % 2 == 1 and seg.size:
            key = rows.astype(np.int64) * max(n_groups, 1) + group_of_col[cols]
            # keys are sorted by row already: a stable (run-aware) sort is close to linear
            by_key = np.argsort(key, kind="stable")
            ordered = key[by_key]
            first = np.concatenate([[True], ordered[1:] != ordered[:-1]])
            slot = np.empty(key.size, dtype=np.intp)
            slot[by_key] = np.cumsum(first) - 1
            uniq = ordered[first]
            slot_row = (uniq // max(n_groups, 1)).astype(np.intp)
            slot_group = (uniq % max(n_groups, 1)).astype(np.intp)
            np.cumsum(np.bincount(slot_row, minlength=n), out=slot_indptr[1:])
        out.append(
            _Entries(
                data=positions.data[seg],
                local=local_col[cols].astype(index_dtype),
                rows=rows,
                indptr=indptr,
                slot=slot,
                slot_indptr=slot_indptr,
                slot_row=slot_row,
                slot_group=slot_group,
                n_cols=int(n_cols[c]),
            )
        )
    layout = tuple(out)
    book.cache["layout"] = layout
    return layout


def evaluate(
    ctx: MarginContext,
    positions: sp.csr_matrix,
    collateral: sp.csr_matrix,
    layout: tuple[_Entries, ...],
) -> dict[str, np.ndarray]:
    """Margin figures of the accounts given as rows of ``positions`` and ``collateral``
    (``layout``: the same positions split by :func:`position_layout`).

    Returns the arrays :class:`MarginResult` holds (without names). Every figure of a row
    depends on that row only.
    """
    m = ctx.methodology
    cfg = m.addons
    n = positions.shape[0]
    n_und = len(ctx.underlyings)
    c_signed = np.asarray(collateral @ ctx.coll_signed)
    c_abs = np.asarray(_with_data(collateral, np.abs(collateral.data)) @ ctx.coll_abs)
    net = c_signed[:, n_und : 2 * n_und].copy()
    gross = c_abs[:, :n_und].copy()
    lin = c_signed[:, :n_und].copy()
    gamma = np.zeros((n, n_und))
    vega = np.zeros((n, n_und))
    mtm = np.zeros(n)
    som = np.zeros(n)
    perp_im = np.zeros(n)
    perp_mm = np.zeros(n)
    oracle = c_abs[:, n_und].copy()
    conc = np.zeros(n)
    isolated = c_signed[:, -1] + c_abs[:, -1]
    options: list[tuple[int, sp.csr_matrix, _Entries, _Block]] = []
    for entries, blk in zip(layout, ctx.blocks, strict=True):
        u = blk.underlying
        sub = entries.matrix()
        aq = np.abs(sub.data)
        sv = np.asarray(sub @ blk.signed) if blk.signed_names else np.zeros((n, 0))
        av = np.asarray(_with_data(sub, aq) @ blk.absolute) if blk.abs_names else np.zeros((n, 0))
        signed_col = {name: sv[:, j] for j, name in enumerate(blk.signed_names)}
        abs_col = {name: av[:, j] for j, name in enumerate(blk.abs_names)}
        for name, target in (
            ("delta", net[:, u]),
            ("gamma", gamma[:, u]),
            ("vega", vega[:, u]),
            ("lin", lin[:, u]),
            ("mtm", mtm),
            ("iso_diff", isolated),
        ):
            if name in signed_col:
                target += signed_col[name]
        for name, target in (
            ("abs_delta", gross[:, u]),
            ("perp_im", perp_im),
            ("perp_mm", perp_mm),
            ("oracle", oracle),
            ("iso_sum", isolated),
        ):
            if name in abs_col:
                target += abs_col[name]
        if "som" in abs_col:
            som += 0.5 * (abs_col["som"] - signed_col["som"])
        if blk.concentration.any():
            conc += _with_data(sub, aq * np.sqrt(aq)) @ blk.concentration
        if blk.is_option:
            options.append((u, sub, entries, blk))

    # scenario scan per underlying: options by full revaluation, delta-one and coin collateral
    # through their linear coefficient
    loss = np.zeros((n, n_und))
    direction = np.zeros((n, n_und))
    worst_val = np.full(n, np.inf)
    worst_idx = np.zeros(n, dtype=np.intp)
    opt_of = {u: (sub, entries.rows, blk) for u, sub, entries, blk in options}
    start = 0
    for u in range(n_und):
        sub, rows, blk = opt_of[u]
        lin_u = np.ascontiguousarray(lin[:, u])
        arg, low = _scan(ctx, u, sub, rows, blk, lin_u)
        loss[:, u] = np.maximum(-low, 0.0)
        direction[:, u] = -np.sign(ctx.moves[u][arg])
        better = low < worst_val
        worst_val = np.where(better, low, worst_val)
        worst_idx = np.where(better, start + arg, worst_idx)
        start += ctx.move64[u].size
    standalone = loss.sum(axis=1)
    cross = _offset(ctx, positions, collateral, loss, direction, standalone)
    floor_delta = min_delta_floor(net, gross, ctx.addons.index, cfg)
    scen_part = np.maximum.reduce([cross, floor_delta, som])
    naked = _naked_shorts(ctx, n, options)
    coll_extra = c_signed[:, 2 * n_und] + c_abs[:, n_und + 1]
    im = (
        m.im_loss_factor * scen_part
        + perp_im
        + cfg.short_option_im * naked
        + oracle
        + conc
        + coll_extra
    )
    mm = (
        m.mm_loss_factor * scen_part
        + perp_mm
        + cfg.short_option_mm * naked
        + cfg.concentration_mm_share * conc
    )
    coll_value = c_signed[:, 2 * n_und + 1] + c_abs[:, n_und + 2]
    isolated = isolated + conc
    prec = m.settlement_precision
    im_r = round_up(im, prec)
    mm_r = round_up(mm, prec)
    coll_r = round_down(coll_value, prec)
    equity = round_down(coll_r + mtm, prec)
    liquidatable = equity < mm_r
    positive = equity > 0
    ratio = np.where(positive, mm_r / np.where(positive, equity, 1.0), np.inf)
    ratio = np.where((equity == 0) & (mm_r == 0), 0.0, ratio)
    return {
        "im": im_r,
        "mm": mm_r,
        "collateral_value": coll_r,
        "mtm": mtm,
        "equity": equity,
        "margin_ratio": ratio,
        "liquidatable": liquidatable,
        "worst_scenario": worst_idx,
        "scenario_part": scen_part,
        "standalone_sum": standalone,
        "isolated_im": isolated,
        "delta": net,
        "gamma": gamma,
        "vega": vega,
    }


def _scan(
    ctx: MarginContext,
    u: int,
    sub: sp.csr_matrix,
    rows: IntArray,
    blk: _Block,
    lin: FloatArray,
) -> tuple[IntArray, FloatArray]:
    """Worst scenario of underlying ``u`` (column within its set) and its weighted P&L, per
    account of the chunk.

    ``sub`` holds the chunk's option positions of ``u`` (``rows``: the account row of each
    entry) and ``lin`` the accounts' linear coefficients (delta-one positions and coin
    collateral). Only accounts holding options of ``u`` are scanned over every scenario; the
    others' P&L ``lin x move`` is linear, so their worst scenario is an end of the move range.
    Ties resolve to the first scenario, as ``argmin`` over all of them would.
    """
    n = sub.shape[0]
    move64 = ctx.move64[u]
    held = np.diff(sub.indptr) > 0
    scanned = np.flatnonzero(held)
    arg = _linear_worst(lin, move64)
    if ctx.scan_precision == "float64":
        low = 0.0 + lin * move64[arg]
        if scanned.size:
            pnl = _with_linear_column(sub, rows, held, scanned, lin, np.float64) @ blk.scan64
            best = np.argmin(pnl, axis=1)
            arg[scanned] = best
            low[scanned] = pnl[np.arange(scanned.size), best]
        return arg, low
    if scanned.size:
        pnl32 = _with_linear_column(sub, rows, held, scanned, lin, np.float32) @ blk.scan32
        arg[scanned] = np.argmin(pnl32, axis=1)
    # exact double-precision P&L of the selected scenario
    k = move64.size
    exact = sub.data * blk.risk64.ravel()[sub.indices * k + arg[rows]]
    low = np.bincount(rows, weights=exact, minlength=n) + lin * move64[arg]
    return arg, low


def _with_linear_column(
    sub: sp.csr_matrix,
    rows: IntArray,
    held: BoolArray,
    scanned: IntArray,
    lin: FloatArray,
    dtype: type[np.floating],  # type: ignore[type-arg]
) -> sp.csr_matrix:
    """The ``scanned`` rows of ``sub`` with one more column holding ``lin``: multiplied by a
    risk array whose last row is the weighted moves, it adds ``lin x move`` to every scenario
    P&L after the option terms, in the same order and rounding as a separate product."""
    m, nnz = scanned.size, sub.nnz
    index_dtype = sub.indptr.dtype
    indptr = np.empty(m + 1, dtype=index_dtype)
    indptr[0] = 0
    np.add(sub.indptr[scanned + 1], np.arange(1, m + 1, dtype=index_dtype), out=indptr[1:])
    compressed = np.cumsum(held, dtype=np.intp) - 1
    at = np.arange(nnz, dtype=np.intp) + compressed[rows]
    last = indptr[1:] - 1
    data = np.empty(nnz + m, dtype=dtype)
    data[at] = sub.data
    data[last] = lin[scanned]
    indices = np.empty(nnz + m, dtype=sub.indices.dtype)
    indices[at] = sub.indices
    indices[last] = sub.shape[1]
    return sp.csr_matrix((data, indices, indptr), shape=(m, sub.shape[1] + 1), copy=False)


def _linear_worst(lin: FloatArray, move: FloatArray) -> IntArray:
    """First ``argmin_k lin x move[k]`` per account (rounded products, as a full scan compares).

    The minimum sits at the smallest move for ``lin > 0`` and the largest for ``lin < 0``;
    moves within 1e-9 of that end are candidates whose rounded products are compared, so ties
    resolve exactly as ``np.argmin(lin[:, None] * move, axis=1)`` does. Coefficients so tiny
    or huge that products could leave the normal range take that full scan.
    """
    arg = np.zeros(lin.size, dtype=np.intp)
    if move.size == 0:
        return arg
    scale = float(np.abs(move).max())
    for side, selector in ((1.0, lin > 0), (-1.0, lin < 0)):
        rows = np.flatnonzero(selector)
        if rows.size == 0:
            continue
        end = float(move.min()) if side > 0 else float(move.max())
        near = np.flatnonzero(side * (move - end) <= 1e-9 * scale)
        # equal moves give equal products: keep the first of each value
        _, first = np.unique(move[near], return_index=True)
        cand = near[np.sort(first)]
        if cand.size == 1:
            arg[rows] = cand[0]
        else:
            arg[rows] = cand[np.argmin(lin[rows, None] * move[None, cand], axis=1)]
    magnitude = np.abs(lin)
    odd = np.flatnonzero((lin != 0) & ~((magnitude >= 1e-200) & (magnitude <= 1e200)))
    if odd.size:
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            arg[odd] = np.argmin(lin[odd, None] * move[None, :], axis=1)
    return arg


def _naked_shorts(
    ctx: MarginContext,
    n: int,
    options: list[tuple[int, sp.csr_matrix, _Entries, _Block]],
) -> FloatArray:
    """USD notional of naked short options per strike group (shorts net of same-strike longs)."""
    out = np.zeros(n)
    for _, sub, entries, blk in options:
        if entries.slot_group.size == 0:
            continue
        net = np.bincount(
            entries.slot,
            weights=sub.data * blk.coins[sub.indices],
            minlength=entries.slot_group.size,
        )
        naked = np.maximum(-net, 0.0) * ctx.addons.group_index[entries.slot_group]
        out += np.bincount(entries.slot_row, weights=naked, minlength=n)
    return out


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
    scan_precision: ScanPrecision = "float64",
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
        Accounts per chunk (bounds memory: a chunk holds ``chunk_size x scenarios`` floats;
        the default keeps a chunk's scan within the processor caches).
    n_threads
        Worker threads over chunks (SciPy's sparse products release the GIL).
    scan_precision
        Precision of the option scenario scan (see :func:`prepare`).

    Results do not depend on ``chunk_size`` or ``n_threads``: every account's figures are
    computed from its own row with the same operations in the same order. With
    ``methodology.mm_scenarios`` the book is scanned a second time on the MM grids, which give
    ``mm`` (never above the MM the IM grids give), ``margin_ratio`` and ``liquidatable``.
    """
    mm_methodology = methodology.mm_view()
    if mm_methodology is not None:
        base = compute_margin(
            book,
            methodology.im_view(),
            context=context,
            chunk_size=chunk_size,
            n_threads=n_threads,
            scan_precision=scan_precision,
        )
        mm_run = compute_margin(
            book,
            mm_methodology,
            chunk_size=chunk_size,
            n_threads=n_threads,
            scan_precision=scan_precision,
        )
        # MM scans on the MM grids but never charges more than the IM grids would (a finer MM
        # grid can find a deeper minimum of a convex position between IM grid points); both
        # runs share the MM loss factor and add-ons, so the smaller MM is the smaller scan.
        use_mm = mm_run.mm <= base.mm
        return dataclasses.replace(
            base,
            mm=np.where(use_mm, mm_run.mm, base.mm),
            margin_ratio=np.where(use_mm, mm_run.margin_ratio, base.margin_ratio),
            liquidatable=np.where(use_mm, mm_run.liquidatable, base.liquidatable),
        )
    ctx = (
        context
        if context is not None
        else prepare(book, methodology, scan_precision=scan_precision)
    )
    n = book.n_accounts
    slices = list(_chunks(n, chunk_size)) or [slice(0, 0)]
    layout = position_layout(book)
    n_und = len(ctx.underlyings)
    out: dict[str, np.ndarray] = {
        name: np.empty((n, n_und) if per_und else n, dtype)
        for name, (dtype, per_und) in RESULT_ARRAYS.items()
    }
    # only joint-scenario offsets read the whole position rows
    whole_rows = ctx.methodology.offsets.mode == "joint"

    def work(rows: slice) -> None:
        chunk = tuple(e.take_rows(rows.start, rows.stop) for e in layout)
        positions = _row_range(book.positions, rows) if whole_rows else _no_columns(rows)
        part = evaluate(ctx, positions, _row_range(book.collateral, rows), chunk)
        for name, values in part.items():
            out[name][rows] = values

    run_chunks(work, slices, n_threads)
    return MarginResult(
        accounts=book.accounts,
        underlyings=ctx.underlyings,
        scenario_labels=ctx.scenario_labels,
        **out,  # type: ignore[arg-type]
    )


def _row_range(matrix: sp.csr_matrix, rows: slice) -> sp.csr_matrix:
    """Rows ``rows`` of a CSR matrix as a view (no copy of its entries)."""
    lo, hi = int(matrix.indptr[rows.start]), int(matrix.indptr[rows.stop])
    return sp.csr_matrix(
        (matrix.data[lo:hi], matrix.indices[lo:hi], matrix.indptr[rows.start : rows.stop + 1] - lo),
        shape=(rows.stop - rows.start, matrix.shape[1]),
        copy=False,
    )


def _no_columns(rows: slice) -> sp.csr_matrix:
    """An empty stand-in for position rows an evaluation does not read."""
    return sp.csr_matrix((rows.stop - rows.start, 0))


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
