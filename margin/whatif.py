"""What-if margin of one account after a hypothetical trade, without recomputing the book.

:class:`WhatIf` keeps the prepared :class:`~margin.engine.MarginContext` (risk arrays and add-on
vectors) and evaluates one account with small dense numpy operations on its own positions
only; the figures equal those :func:`~margin.engine.compute_margin` gives for the book with the
trade applied (a test checks it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from margin.book import Book
from margin.engine import MarginContext, prepare, round_down, round_up
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
        risk, add = self.ctx.risk, self.ctx.addons
        n_inst, n_assets = len(book.instruments), len(book.assets)
        sizes = [len(s) for s in risk.sets]
        self._starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.intp)
        self._stops = np.cumsum(sizes).astype(np.intp)
        total = int(sum(sizes))
        self._r_full = np.zeros((n_inst, total))
        self._a_full = np.zeros((n_assets, total))
        for u, (cols, r, a_cols, ra) in enumerate(
            zip(risk.inst_of, risk.risk_inst_scen, risk.asset_of, risk.risk_asset_scen, strict=True)
        ):
            block = slice(self._starts[u], self._stops[u])
            self._r_full[cols, block] = r
            self._a_full[a_cols, block] = ra
        self._moves = np.concatenate([s.spot_moves for s in risk.sets])
        self._und = book.instruments.underlying
        self._asset_und = book.asset_underlying()
        sg = add.short_group.tocoo()
        self._group = np.full(n_inst, -1, dtype=np.intp)
        self._group[sg.row] = sg.col
        self._group_w = np.zeros(n_inst)
        self._group_w[sg.row] = sg.data
        self._index_id = {name: i for i, name in enumerate(book.accounts)}
        self._n_und = len(self.ctx.underlyings)
        self._listed = self.ctx.offset_listed

    def _row(self, account: int | str) -> int:
        return self._index_id[account] if isinstance(account, str) else int(account)

    def margin_after(
        self, account: int | str, instruments: ArrayLike = (), quantities: ArrayLike = ()
    ) -> WhatIfResult:
        """Margin of ``account`` (row number or name) after adding ``quantities`` (signed
        contracts) of ``instruments`` (column numbers) to its positions."""
        r = self._row(account)
        p = self.book.positions
        lo, hi = p.indptr[r], p.indptr[r + 1]
        idx = p.indices[lo:hi]
        qty = p.data[lo:hi]
        t_idx = np.asarray(instruments, dtype=np.intp)
        if t_idx.size:
            idx = np.concatenate([idx, t_idx])
            qty = np.concatenate([qty, np.asarray(quantities, dtype=np.float64)])
            idx, inv = np.unique(idx, return_inverse=True)
            qty = np.bincount(inv, weights=qty, minlength=idx.size)
        c = self.book.collateral
        clo, chi = c.indptr[r], c.indptr[r + 1]
        return self._evaluate(idx, qty, c.indices[clo:chi], c.data[clo:chi])

    def margin_of_positions(
        self, account: int | str, instruments: ArrayLike, quantities: ArrayLike
    ) -> WhatIfResult:
        """Margin of ``account``'s collateral with exactly these positions (instrument column
        numbers, unique, and signed contracts) instead of its current ones."""
        r = self._row(account)
        c = self.book.collateral
        clo, chi = c.indptr[r], c.indptr[r + 1]
        return self._evaluate(
            np.asarray(instruments, dtype=np.intp),
            np.asarray(quantities, dtype=np.float64),
            c.indices[clo:chi],
            c.data[clo:chi],
        )

    def risk_column(self, scenario: int) -> FloatArray:
        """Weighted P&L per contract of every instrument in global scenario ``scenario``."""
        return np.asarray(self._r_full[:, scenario])

    def _evaluate(
        self, idx: IntArray, qty: FloatArray, a_idx: IntArray, amt: FloatArray
    ) -> WhatIfResult:
        ctx = self.ctx
        m = ctx.methodology
        cfg = m.addons
        add, risk = ctx.addons, ctx.risk
        pnl = qty @ self._r_full[idx] + amt @ self._a_full[a_idx]
        n_und = self._n_und
        loss = np.empty(n_und)
        direction = np.empty(n_und)
        for u in range(n_und):
            block = pnl[self._starts[u] : self._stops[u]]
            j = int(block.argmin())
            loss[u] = max(-block[j], 0.0)
            direction[u] = -np.sign(self._moves[self._starts[u] + j])
        worst = int(pnl.argmin())
        standalone = float(loss.sum())
        cross = self._offset(loss, direction, standalone, idx, qty, a_idx, amt)
        und = self._und[idx]
        d = qty * risk.delta_inst[idx]
        a_und = self._asset_und[a_idx]
        da = amt * risk.delta_asset[a_idx]
        keep = a_und >= 0
        net = np.bincount(und, d, n_und) + np.bincount(a_und[keep], da[keep], n_und)
        gross = np.bincount(und, np.abs(d), n_und) + np.bincount(
            a_und[keep], np.abs(da[keep]), n_und
        )
        abs_net = np.abs(net)
        floor = float(
            (
                (
                    cfg.min_delta_net * abs_net
                    + cfg.min_delta_hedged * np.maximum(gross - abs_net, 0.0) / 2.0
                )
                * add.index
            ).sum()
        )
        aq = np.abs(qty)
        short = np.maximum(-qty, 0.0)
        som = float(short @ add.som_unit[idx])
        scen = max(cross, floor, som)
        g = self._group[idx]
        opt = g >= 0
        naked_im = naked_mm = 0.0
        if opt.any():
            gid, inv = np.unique(g[opt], return_inverse=True)
            net_g = np.bincount(inv, qty[opt] * self._group_w[idx][opt], gid.size)
            naked = np.maximum(-net_g, 0.0) @ add.group_index[gid]
            naked_im = float(naked * cfg.short_option_im)
            naked_mm = float(naked * cfg.short_option_mm)
        conc = float((aq**1.5) @ add.concentration_unit[idx])
        oracle = float(aq @ add.oracle_inst[idx] + np.abs(amt) @ add.oracle_asset[a_idx])
        a_long = np.maximum(amt, 0.0)
        a_short = np.minimum(amt, 0.0)
        extra = float(a_long @ add.collateral_im_extra[a_idx])
        im = (
            m.im_loss_factor * scen
            + float(aq @ add.perp_im[idx])
            + naked_im
            + oracle
            + conc
            + extra
        )
        mm = (
            m.mm_loss_factor * scen
            + float(aq @ add.perp_mm[idx])
            + naked_mm
            + cfg.concentration_mm_share * conc
        )
        coll = float(a_long @ add.collateral_long[a_idx] + a_short @ add.collateral_short[a_idx])
        mtm = float(qty @ risk.mtm_inst[idx])
        prec = m.settlement_precision
        im_r, mm_r, coll_r = (
            float(round_up(np.array([im]), prec)[0]),
            float(round_up(np.array([mm]), prec)[0]),
            float(round_down(np.array([coll]), prec)[0]),
        )
        equity = float(round_down(np.array([coll_r + mtm]), prec)[0])
        return WhatIfResult(im_r, mm_r, equity, scen, worst, equity < mm_r)

    def _offset(
        self,
        loss: FloatArray,
        direction: FloatArray,
        standalone: float,
        idx: IntArray,
        qty: FloatArray,
        a_idx: IntArray,
        amt: FloatArray,
    ) -> float:
        ctx = self.ctx
        offsets = ctx.methodology.offsets
        listed = self._listed
        if offsets.mode == "none" or not listed.any():
            return standalone
        unlisted = float(loss[~listed].sum())
        if offsets.mode == "correlation":
            x = (direction * loss)[listed]
            corr = ctx.correlation[np.ix_(listed, listed)]
            off = corr - np.diag(np.diag(corr))
            quad = float((loss[listed] ** 2).sum() + x @ off @ x)
            portfolio = float(np.sqrt(max(quad, 0.0))) + unlisted
        else:
            from margin.engine import _tail_loss

            assert ctx.risk.joint_inst is not None and ctx.risk.joint_asset is not None
            pnl = qty @ ctx.risk.joint_inst[idx] + amt @ ctx.risk.joint_asset[a_idx]
            portfolio = float(_tail_loss(-pnl[None, :], offsets.confidence, offsets.measure)[0])
            portfolio += unlisted
        cap = offsets.cap
        if offsets.cap_basis == "diversification":
            cross = standalone - cap * max(standalone - portfolio, 0.0)
        else:
            cross = max(portfolio, (1.0 - cap) * standalone)
        return min(cross, standalone)
