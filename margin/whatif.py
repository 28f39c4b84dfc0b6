"""What-if margin of one account after a hypothetical trade, without recomputing the book.

:class:`WhatIf` keeps the prepared :class:`~margin.engine.MarginContext` (risk arrays and add-on
vectors) and evaluates one account with a few small dense products on its own positions only
(plain Python for the handful of scalars), so a query costs tens of microseconds. The figures
equal those :func:`~margin.engine.compute_margin` gives for the book with the trade applied
(a test checks it).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from margin.book import Book
from margin.engine import MarginContext, _tail_loss, prepare
from margin.methodology import Methodology
from margin.typing import FloatArray, IntArray

__all__ = ["WhatIf", "WhatIfResult"]


class WhatIfResult(NamedTuple):
    """Margin of one account (USD; requirements rounded up, equity down)."""

    im: float
    mm: float
    equity: float
    scenario_part: float
    worst_scenario: int
    liquidatable: bool


def _round(value: float, precision: float, decimals: int, up: bool) -> float:
    """Scalar twin of :func:`margin.engine.round_up` / ``round_down``."""
    if precision <= 0:
        return value
    steps = round(value / precision, 6)
    steps = math.ceil(steps) if up else math.floor(steps)
    return round(steps * precision, decimals) + 0.0


class WhatIf:
    """Fast single-account margin queries against a prepared book.

    Parameters
    ----------
    book, methodology
        The book whose accounts are queried.
    context
        A context from :func:`margin.engine.prepare` for this book and methodology (built when
        omitted).
    """

    def __init__(
        self, book: Book, methodology: Methodology, *, context: MarginContext | None = None
    ) -> None:
        self.book = book
        self.ctx = context if context is not None else prepare(book, methodology)
        ctx = self.ctx
        risk, add = ctx.risk, ctx.addons
        table = book.instruments
        n_inst, n_assets = len(table), len(book.assets)
        n_und = len(ctx.underlyings)
        sizes = [len(s) for s in risk.sets]
        stops = np.cumsum(sizes).tolist()
        self._bounds = [(stop - k, stop) for stop, k in zip(stops, sizes, strict=True)]
        total = int(sum(sizes))
        self._r_full = np.zeros((n_inst, total))
        self._a_full = np.zeros((n_assets, total))
        for u, (cols, r, a_cols, ra) in enumerate(
            zip(risk.inst_of, risk.risk_inst_scen, risk.asset_of, risk.risk_asset_scen, strict=True)
        ):
            block = slice(*self._bounds[u])
            self._r_full[cols, block] = r
            self._a_full[a_cols, block] = ra
        self._moves = np.concatenate([s.spot_moves for s in risk.sets]).tolist()
        one_hot = np.zeros((n_inst, n_und))
        one_hot[np.arange(n_inst), table.underlying] = 1.0
        # signed: [delta_u..., mtm, som]; absolute: [|delta_u|..., perp_im, perp_mm, oracle, som]
        self._w_signed = np.column_stack(
            [one_hot * risk.delta_inst[:, None], risk.mtm_inst, add.som_unit]
        )
        self._w_abs = np.column_stack(
            [
                one_hot * np.abs(risk.delta_inst)[:, None],
                add.perp_im,
                add.perp_mm,
                add.oracle_inst,
                add.som_unit,
            ]
        )
        self._conc = add.concentration_unit
        self._has_conc = bool(self._conc.any())
        # one gather and one product per side: scenario P&L and signed sums together
        self._n_scen = total
        self._inst_signed = np.hstack([self._r_full, self._w_signed])
        self._asset_signed = np.hstack([self._a_full, ctx.coll_signed])
        self._coll_abs = ctx.coll_abs
        prec = methodology.settlement_precision
        self._prec = prec
        self._decimals = max(0, math.ceil(-math.log10(prec))) + 2 if prec > 0 else 0
        sg = add.short_group.tocoo()
        group = np.full(n_inst, -1, dtype=np.intp)
        group[sg.row] = sg.col
        weight = np.zeros(n_inst)
        weight[sg.row] = sg.data
        self._group = group.tolist()
        self._group_w = weight.tolist()
        self._group_index = add.group_index.tolist()
        self._index = add.index.tolist()
        self._row_of = {name: i for i, name in enumerate(book.accounts)}
        self._n_und = n_und
        listed = ctx.offset_listed
        self._listed = [int(i) for i in np.flatnonzero(listed)]
        self._unlisted = [int(i) for i in np.flatnonzero(~listed)]
        corr = ctx.correlation
        self._corr = [[float(corr[a, b]) for b in range(n_und)] for a in range(n_und)]
        mm_methodology = ctx.methodology.mm_view()
        # separate MM grids: a second query object whose scenario part gives MM
        self._mm = None if mm_methodology is None else WhatIf(book, mm_methodology)

    def _row(self, account: int | str) -> int:
        return self._row_of[account] if isinstance(account, str) else int(account)

    def _held(self, row: int) -> tuple[IntArray, FloatArray]:
        p = self.book.positions
        lo, hi = p.indptr[row], p.indptr[row + 1]
        return p.indices[lo:hi], p.data[lo:hi]

    def margin_after(
        self, account: int | str, instruments: ArrayLike = (), quantities: ArrayLike = ()
    ) -> WhatIfResult:
        """Margin of ``account`` (row number or name) after adding ``quantities`` (signed
        contracts) of ``instruments`` (column numbers) to its positions."""
        r = self._row(account)
        idx, qty = self._held(r)
        trade_idx = np.asarray(instruments, dtype=np.intp).ravel()
        if trade_idx.size:
            merged = dict(zip(idx.tolist(), qty.tolist(), strict=True))
            trade_qty = np.asarray(quantities, dtype=np.float64).ravel().tolist()
            for i, q in zip(trade_idx.tolist(), trade_qty, strict=True):
                merged[i] = merged.get(i, 0.0) + q
            idx = np.fromiter(merged.keys(), dtype=np.intp, count=len(merged))
            qty = np.fromiter(merged.values(), dtype=np.float64, count=len(merged))
        return self._evaluate(r, idx, qty)

    def margin_of_positions(
        self, account: int | str, instruments: ArrayLike, quantities: ArrayLike
    ) -> WhatIfResult:
        """Margin of ``account``'s collateral with exactly these positions (instrument column
        numbers, unique, and signed contracts) instead of its current ones."""
        return self._evaluate(
            self._row(account),
            np.asarray(instruments, dtype=np.intp),
            np.asarray(quantities, dtype=np.float64),
        )

    def risk_column(self, scenario: int) -> FloatArray:
        """Weighted P&L per contract of every instrument in global scenario ``scenario``."""
        return np.asarray(self._r_full[:, scenario])

    def _evaluate(self, row: int, idx: IntArray, qty: FloatArray) -> WhatIfResult:
        ctx = self.ctx
        m = ctx.methodology
        cfg = m.addons
        n_und = self._n_und
        c = self.book.collateral
        clo, chi = c.indptr[row], c.indptr[row + 1]
        a_idx, amt = c.indices[clo:chi], c.data[clo:chi]
        aq = np.abs(qty)
        k = self._n_scen
        inst = qty @ self._inst_signed[idx]
        asset = amt @ self._asset_signed[a_idx]
        pnl = (inst[:k] + asset[:k]).tolist()
        sv = inst[k:].tolist()
        cs = asset[k:].tolist()
        av = (aq @ self._w_abs[idx]).tolist()
        conc = float((aq * np.sqrt(aq)) @ self._conc[idx]) if self._has_conc else 0.0
        ca = (np.abs(amt) @ self._coll_abs[a_idx]).tolist()

        loss, direction = [0.0] * n_und, [0.0] * n_und
        worst, worst_val = 0, math.inf
        for u, (a, b) in enumerate(self._bounds):
            block = pnl[a:b]
            low = min(block)
            j = a + block.index(low)
            loss[u] = max(-low, 0.0)
            move = self._moves[j]
            direction[u] = -1.0 if move > 0 else (1.0 if move < 0 else 0.0)
            if low < worst_val:
                worst, worst_val = j, low
        standalone = sum(loss)
        cross = self._offset(loss, direction, standalone, idx, qty, a_idx, amt)
        floor = 0.0
        for u in range(n_und):
            net = sv[u] + cs[n_und + u]
            gross = av[u] + ca[u]
            hedged = max(gross - abs(net), 0.0) / 2.0
            floor += (cfg.min_delta_net * abs(net) + cfg.min_delta_hedged * hedged) * self._index[u]
        som = 0.5 * (av[n_und + 3] - sv[n_und + 1])
        scen = max(cross, floor, som)
        naked = self._naked(idx.tolist(), qty.tolist())
        perp_im, perp_mm, oracle = av[n_und], av[n_und + 1], av[n_und + 2] + ca[n_und]
        extra = cs[2 * n_und] + ca[n_und + 1]
        im = m.im_loss_factor * scen + perp_im + cfg.short_option_im * naked + oracle + conc + extra
        mm = (
            m.mm_loss_factor * scen
            + perp_mm
            + cfg.short_option_mm * naked
            + cfg.concentration_mm_share * conc
        )
        coll = cs[2 * n_und + 1] + ca[n_und + 2]
        prec, dec = self._prec, self._decimals
        im_r, mm_r = _round(im, prec, dec, True), _round(mm, prec, dec, True)
        equity = _round(_round(coll, prec, dec, False) + sv[n_und], prec, dec, False)
        if self._mm is not None:
            mm_r = min(mm_r, self._mm._evaluate(row, idx, qty).mm)
        return WhatIfResult(im_r, mm_r, equity, scen, worst, equity < mm_r)

    def _naked(self, idx: list[int], qty: list[float]) -> float:
        net: dict[int, float] = {}
        for i, q in zip(idx, qty, strict=True):
            g = self._group[i]
            if g >= 0:
                net[g] = net.get(g, 0.0) + q * self._group_w[i]
        return sum(max(-v, 0.0) * self._group_index[g] for g, v in net.items())

    def _offset(
        self,
        loss: list[float],
        direction: list[float],
        standalone: float,
        idx: IntArray,
        qty: FloatArray,
        a_idx: IntArray,
        amt: FloatArray,
    ) -> float:
        offsets = self.ctx.methodology.offsets
        listed = self._listed
        if offsets.mode == "none" or not listed:
            return standalone
        unlisted = sum(loss[u] for u in self._unlisted)
        if offsets.mode == "correlation":
            quad = sum(loss[u] ** 2 for u in listed)
            for a in listed:
                for b in listed:
                    if a != b:
                        quad += self._corr[a][b] * direction[a] * loss[a] * direction[b] * loss[b]
            portfolio = math.sqrt(max(quad, 0.0)) + unlisted
        else:
            risk = self.ctx.risk
            assert risk.joint_inst is not None and risk.joint_asset is not None
            pnl = qty @ risk.joint_inst[idx] + amt @ risk.joint_asset[a_idx]
            portfolio = float(_tail_loss(-pnl[None, :], offsets.confidence, offsets.measure)[0])
            portfolio += unlisted
        cap = offsets.cap
        if offsets.cap_basis == "diversification":
            cross = standalone - cap * max(standalone - portfolio, 0.0)
        else:
            cross = max(portfolio, (1.0 - cap) * standalone)
        return min(cross, standalone)
