"""What-if margin of one account after a hypothetical trade, without recomputing the book.

:class:`WhatIf` prepares, once per book, two things:

- per instrument, its weighted scenario P&L row over every scenario column (zero outside its
  underlying's block) and its per-contract add-on figures as Python floats;
- per account, a table of the sums the floors and add-ons need (net and gross coin delta per
  underlying, coin-collateral linear coefficient per underlying, MTM, short-option minimum,
  perp IM and MM, oracle and concentration add-ons, collateral IM add-on and value), built with a
  few sparse products over the whole book.

A query then takes the account's position row and the trade, gathers their risk rows and
forms the scenario P&L in one small product (``[q, dq] @ risk[[held, traded]]``), finds the
worst scenario per underlying, corrects the account's sums by the difference of each traded
instrument's old and new contribution (``|q0 + dq| - |q0|`` and the like), and runs offsets,
floors, loss factors and rounding on a few Python floats: about ten numpy calls per query.
Results equal :func:`~margin.engine.compute_margin` of the book with the trade applied (tests
check it to 1e-12 relative; sums run in another order, so not always bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from margin.book import Book
from margin.engine import MarginContext, _decimals, _tail_loss, prepare
from margin.methodology import Methodology
from margin.typing import FloatArray, IntArray

__all__ = ["TradeError", "WhatIf", "WhatIfResult"]

#: accounts per sparse product when the per-account table is built (bounds temporaries)
TABLE_CHUNK = 131_072


class TradeError(ValueError):
    """A hypothetical trade naming an account or instrument outside the book, or with one
    quantity missing."""


class WhatIfResult(NamedTuple):
    """Margin of one account (USD; requirements rounded up, equity down)."""

    im: float
    mm: float
    equity: float
    scenario_part: float
    worst_scenario: int
    liquidatable: bool


class _Contract(NamedTuple):
    """Per-contract figures of one instrument (USD unless stated)."""

    underlying: int
    delta: float  # coins
    abs_delta: float
    mtm: float
    short_minimum: float  # short-option minimum per short contract
    perp_im: float
    perp_mm: float
    oracle: float
    concentration: float  # times |q|^1.5
    group: int  # strike group, -1 for non-options
    group_coins: float


def _round(value: float, precision: float, scale: float, up: bool) -> float:
    """Scalar twin of :func:`margin.engine.round_up` / ``round_down`` (``scale`` is
    ``10 ** decimals``): NumPy rounds to decimals as ``rint(x * 10**d) / 10**d``, and Python's
    one-argument ``round`` is the same round-half-even ``rint``."""
    if precision <= 0 or not math.isfinite(value):
        return value
    steps = round(value / precision * 1e6) / 1e6
    whole = math.ceil(steps) if up else math.floor(steps)
    return round(whole * precision * scale) / scale + 0.0


def _as_list(values: ArrayLike, dtype: type[np.number]) -> list:  # type: ignore[type-arg]
    """``values`` as a flat list of Python numbers of ``dtype``'s kind."""
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype == dtype:
        return values.tolist()
    return np.asarray(values, dtype=dtype).ravel().tolist()


class WhatIf:
    """Fast single-account margin queries against a prepared book.

    Parameters
    ----------
    book, methodology
        The book whose accounts are queried.
    context
        A context from :func:`margin.engine.prepare` for this book and methodology (built when
        omitted).

    Notes
    -----
    Construction builds the per-account table (``3 x underlyings + 8`` floats per account, a
    few sparse products over the book); queries never touch other accounts.
    """

    def __init__(
        self, book: Book, methodology: Methodology, *, context: MarginContext | None = None
    ) -> None:
        self._setup(book, context if context is not None else prepare(book, methodology), None)

    def _setup(self, book: Book, ctx: MarginContext, account_table: FloatArray | None) -> None:
        self.book = book
        self.ctx = ctx
        risk, add = ctx.risk, ctx.addons
        table = book.instruments
        n_inst = len(table)
        n_und = len(ctx.underlyings)
        self._n_inst, self._n_und = n_inst, n_und
        sizes = [len(s) for s in risk.sets]
        self._starts: list[int] = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        total = self._starts[-1]
        # instruments x global scenario columns (zero outside their underlying's block), and
        # per underlying the weighted moves in its block (the P&L of 1 USD of linear exposure)
        self._risk_full = np.zeros((n_inst, total))
        self._move_rows = np.zeros((n_und, total))
        for u, (cols, block, sc) in enumerate(
            zip(risk.inst_of, risk.risk_inst_scen, risk.sets, strict=True)
        ):
            a, b = self._starts[u], self._starts[u + 1]
            self._risk_full[cols, a:b] = block
            self._move_rows[u, a:b] = sc.spot_moves * sc.weights
        # one gather serves positions, trade and coin collateral (rows n_inst + u)
        self._risk_rows = np.vstack([self._risk_full, self._move_rows])
        self._block = sizes[0] if sizes and all(k == sizes[0] for k in sizes) else 0
        self._direction = [(-np.sign(sc.spot_moves)).tolist() for sc in risk.sets]
        sg = add.short_group.tocoo()
        group = np.full(n_inst, -1, dtype=np.intp)
        group[sg.row] = sg.col
        coins = np.zeros(n_inst)
        coins[sg.row] = sg.data
        self._group: list[int] = group.tolist()
        self._group_coins: list[float] = coins.tolist()
        self._group_index: list[float] = add.group_index.tolist()
        self._contracts = [
            _Contract(*values)
            for values in zip(
                table.underlying.tolist(),
                risk.delta_inst.tolist(),
                np.abs(risk.delta_inst).tolist(),
                risk.mtm_inst.tolist(),
                add.som_unit.tolist(),
                add.perp_im.tolist(),
                add.perp_mm.tolist(),
                add.oracle_inst.tolist(),
                add.concentration_unit.tolist(),
                group.tolist(),
                coins.tolist(),
                strict=True,
            )
        ]
        self._index: list[float] = add.index.tolist()
        self._row_of: dict[str, int] | None = None

        m = ctx.methodology
        cfg = m.addons
        self._min_delta = (cfg.min_delta_net, cfg.min_delta_hedged)
        self._addon_rates = (cfg.short_option_im, cfg.short_option_mm, cfg.concentration_mm_share)
        self._im_factor, self._mm_factor = m.im_loss_factor, m.mm_loss_factor
        prec = m.settlement_precision
        self._prec = prec
        self._scale = 10.0 ** _decimals(prec) if prec > 0 else 1.0
        listed = ctx.offset_listed
        self._listed: list[int] = np.flatnonzero(listed).tolist()
        self._unlisted: list[int] = np.flatnonzero(~listed).tolist()
        offsets = m.offsets
        self._offset_mode = "" if offsets.mode == "none" or not self._listed else offsets.mode
        self._joint = self._offset_mode == "joint"
        self._confidence, self._measure = offsets.confidence, offsets.measure
        self._cap = offsets.cap
        self._diversification_cap = offsets.cap_basis == "diversification"
        corr = ctx.correlation
        # each unordered pair once: rho_ab + rho_ba
        self._pairs = [
            (a, b, float(corr[a, b] + corr[b, a]))
            for a in self._listed
            for b in self._listed
            if a < b and corr[a, b] + corr[b, a] != 0.0
        ]

        self._inst_sums = self._instrument_sums()
        self._table = account_table if account_table is not None else self._account_table()
        self._mm: WhatIf | None = None
        mm_methodology = m.mm_view()
        if mm_methodology is not None:
            # separate MM grids: a second query object whose scenario part gives MM; only the
            # scenarios differ, so it shares the account table
            self._mm = WhatIf.__new__(WhatIf)
            self._mm._setup(book, prepare(book, mm_methodology), self._table)

    # ------------------------------------------------------------------ public queries

    def margin_after(
        self, account: int | str, instruments: ArrayLike = (), quantities: ArrayLike = ()
    ) -> WhatIfResult:
        """Margin of ``account`` (row number or name) after adding ``quantities`` (signed
        contracts) of ``instruments`` (column numbers) to its positions.

        Raises
        ------
        TradeError
            When the account or an instrument number is outside the book, a quantity is not
            finite, or the sizes differ.
        """
        row = self._row(account)
        js = _as_list(instruments, np.intp)
        qs = _as_list(quantities, np.float64)
        self._check(js, qs)
        return self._after(row, js, qs)

    def margins_after(
        self, accounts: Iterable[int | str], instruments: ArrayLike, quantities: ArrayLike
    ) -> list[WhatIfResult]:
        """:meth:`margin_after` of each of ``accounts`` for the same trade."""
        js = _as_list(instruments, np.intp)
        qs = _as_list(quantities, np.float64)
        self._check(js, qs)
        return [self._after(self._row(a), js, qs) for a in accounts]

    def margin_of_positions(
        self, account: int | str, instruments: ArrayLike, quantities: ArrayLike
    ) -> WhatIfResult:
        """Margin of ``account``'s collateral with exactly these positions (instrument column
        numbers, unique, and signed contracts) instead of its current ones."""
        row = self._row(account)
        js = _as_list(instruments, np.intp)
        qs = _as_list(quantities, np.float64)
        self._check(js, qs)
        return self._of_positions(row, js, qs)

    def risk_column(self, scenario: int) -> FloatArray:
        """Weighted P&L per contract of every instrument in global scenario ``scenario``."""
        return np.asarray(self._risk_full[:, scenario])

    # ------------------------------------------------------------------ preparation

    def _instrument_sums(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Per-contract columns multiplied by ``q``: ``[delta_u..., mtm, short-option
        minimum]``; by ``|q|``: ``[|delta_u|..., perp IM, perp MM, oracle, short-option
        minimum]``; by ``|q|^1.5``: concentration."""
        ctx, table = self.ctx, self.book.instruments
        risk, add = ctx.risk, ctx.addons
        by_und = np.zeros((len(table), self._n_und))
        by_und[np.arange(len(table)), table.underlying] = 1.0
        signed = np.column_stack([by_und * risk.delta_inst[:, None], risk.mtm_inst, add.som_unit])
        absolute = np.column_stack(
            [
                by_und * np.abs(risk.delta_inst)[:, None],
                add.perp_im,
                add.perp_mm,
                add.oracle_inst,
                add.som_unit,
            ]
        )
        return signed, absolute, add.concentration_unit

    def _account_table(self) -> FloatArray:
        """Per account ``[net_u..., gross_u..., collateral lin_u..., mtm, short_min, perp_im,
        perp_mm, oracle, concentration, collateral IM add-on, collateral value]`` (coins, USD
        per unit move, USD)."""
        book, ctx = self.book, self.ctx
        u = self._n_und
        signed, absolute, conc = self._inst_sums
        n = book.n_accounts
        out = np.empty((n, 3 * u + 8))
        for a in range(0, n, TABLE_CHUNK):
            b = min(a + TABLE_CHUNK, n)
            p = book.positions[a:b]
            c = book.collateral[a:b]
            p_abs = sp.csr_matrix((np.abs(p.data), p.indices, p.indptr), shape=p.shape)
            c_abs = sp.csr_matrix((np.abs(c.data), c.indices, c.indptr), shape=c.shape)
            s = np.asarray(p @ signed)
            v = np.asarray(p_abs @ absolute)
            cs = np.asarray(c @ ctx.coll_signed)
            ca = np.asarray(c_abs @ ctx.coll_abs)
            rows = out[a:b]
            rows[:, :u] = s[:, :u] + cs[:, u : 2 * u]
            rows[:, u : 2 * u] = v[:, :u] + ca[:, :u]
            rows[:, 2 * u : 3 * u] = cs[:, :u]
            rows[:, 3 * u] = s[:, u]
            rows[:, 3 * u + 1] = 0.5 * (v[:, u + 3] - s[:, u + 1])
            rows[:, 3 * u + 2] = v[:, u]
            rows[:, 3 * u + 3] = v[:, u + 1]
            rows[:, 3 * u + 4] = v[:, u + 2] + ca[:, u]
            p_pow = sp.csr_matrix((p_abs.data * np.sqrt(p_abs.data), p.indices, p.indptr), p.shape)
            rows[:, 3 * u + 5] = p_pow @ conc
            rows[:, 3 * u + 6] = cs[:, 2 * u] + ca[:, u + 1]
            rows[:, 3 * u + 7] = cs[:, 2 * u + 1] + ca[:, u + 2]
        return out

    # ------------------------------------------------------------------ inputs

    def _row(self, account: int | str) -> int:
        if isinstance(account, str):
            if self._row_of is None:
                self._row_of = {name: i for i, name in enumerate(self.book.accounts)}
            row = self._row_of.get(account)
            if row is None:
                raise TradeError(f"account {account!r} is not in the book")
            return row
        row = int(account)
        n = self.book.n_accounts
        if not 0 <= row < n:
            raise TradeError(f"account row {row} is outside the book (0..{n - 1})")
        return row

    def _check(self, instruments: list[int], quantities: list[float]) -> None:
        if len(instruments) != len(quantities):
            raise TradeError(
                f"a trade needs one quantity per instrument, got {len(instruments)} instruments "
                f"and {len(quantities)} quantities"
            )
        n = self._n_inst
        for j, q in zip(instruments, quantities, strict=True):
            if not 0 <= j < n:
                raise TradeError(f"instrument number {j} is outside the book (0..{n - 1})")
            if not math.isfinite(q):
                raise TradeError(f"the quantity of instrument number {j} is {q}, not a number")

    # ------------------------------------------------------------------ queries

    def _after(self, row: int, js: list[int], qs: list[float]) -> WhatIfResult:
        """``row``'s current positions plus the trade ``qs`` contracts of ``js``."""
        p = self.book.positions
        lo, hi = p.indptr[row : row + 2].tolist()
        idx, qty = p.indices[lo:hi], p.data[lo:hi]
        sums = self._table[row].tolist()
        held_js, held_qs = idx.tolist(), qty.tolist()
        if js:
            # the positions after the trade: a position closed exactly contributes exactly 0
            after = dict(zip(held_js, held_qs, strict=True))
            for j, q in zip(js, qs, strict=True):
                after[j] = after.get(j, 0.0) + q
            rows, coefficients = list(after), list(after.values())
        else:
            rows, coefficients = held_js, held_qs
        pnl = self._pnl(rows, coefficients, sums)
        result = self._evaluate(row, pnl, sums, held_js, held_qs, js, qs, (rows, coefficients))
        if self._mm is not None:
            mm = min(result.mm, self._mm._after(row, js, qs).mm)
            result = result._replace(mm=mm, liquidatable=result.equity < mm)
        return result

    def _of_positions(self, row: int, js: list[int], qs: list[float]) -> WhatIfResult:
        """``row``'s collateral with exactly the positions ``qs`` contracts of ``js``."""
        u = self._n_und
        signed, absolute, conc = self._inst_sums
        idx = np.asarray(js, dtype=np.intp)
        qty = np.asarray(qs, dtype=np.float64)
        aq = np.abs(qty)
        s = (qty @ signed[idx]).tolist()
        v = (aq @ absolute[idx]).tolist()
        c = self.book.collateral
        lo, hi = c.indptr[row : row + 2].tolist()
        a_idx, amt = c.indices[lo:hi], c.data[lo:hi]
        cs = (amt @ self.ctx.coll_signed[a_idx]).tolist()
        ca = (np.abs(amt) @ self.ctx.coll_abs[a_idx]).tolist()
        sums = [s[i] + cs[u + i] for i in range(u)]
        sums += [v[i] + ca[i] for i in range(u)]
        sums += cs[:u]
        sums += [s[u], 0.5 * (v[u + 3] - s[u + 1]), v[u], v[u + 1], v[u + 2] + ca[u]]
        sums += [float((aq * np.sqrt(aq)) @ conc[idx]), cs[2 * u] + ca[u + 1]]
        sums.append(cs[2 * u + 1] + ca[u + 2])
        pnl = self._pnl(js, qs, sums)
        result = self._evaluate(row, pnl, sums, js, qs, [], [], (js, qs))
        if self._mm is not None:
            mm = min(result.mm, self._mm._of_positions(row, js, qs).mm)
            result = result._replace(mm=mm, liquidatable=result.equity < mm)
        return result

    def _pnl(self, rows: list[int], coefficients: list[float], sums: list[float]) -> FloatArray:
        """Weighted scenario P&L (all columns) of ``coefficients`` contracts of instruments
        ``rows`` and of the coin collateral in the table row ``sums``."""
        u_n, n_inst = self._n_und, self._n_inst
        lin = sums[2 * u_n : 3 * u_n]
        if any(lin):  # coin collateral moves with its underlying
            rows = rows + [n_inst + u for u in range(u_n) if lin[u]]
            coefficients = coefficients + [x for x in lin if x]
        if not rows:
            return np.zeros(self._starts[-1])
        return np.dot(coefficients, self._risk_rows.take(rows, axis=0))

    def _evaluate(
        self,
        row: int,
        pnl: FloatArray,
        sums: list[float],
        held_js: list[int],
        held_qs: list[float],
        js: list[int],
        qs: list[float],
        after: tuple[list[int], list[float]],
    ) -> WhatIfResult:
        """Margin from the scenario P&L ``pnl`` of positions, trade and collateral, the account
        table row ``sums`` of the held positions, the trade, and the positions ``after`` it
        (instruments, contracts)."""
        u_n = self._n_und
        net, gross = sums[:u_n], sums[u_n : 2 * u_n]
        mtm, short_min, perp_im, perp_mm, oracle, conc, extra, collateral = sums[3 * u_n :]

        # strike-group nets of held options (naked shorts), and the trade's corrections
        group, coins = self._group, self._group_coins
        nets: dict[int, float] = {}
        for j, q in zip(held_js, held_qs, strict=True):
            g = group[j]
            if g >= 0:
                nets[g] = nets.get(g, 0.0) + q * coins[j]
        if js:
            held = dict(zip(held_js, held_qs, strict=True))
            contracts = self._contracts
            for j, dq in zip(js, qs, strict=True):
                u, delta, abs_delta, mtm_j, som, pim, pmm, orc, cu, g, coins_j = contracts[j]
                q0 = held.get(j, 0.0)
                q1 = q0 + dq
                held[j] = q1
                a0, a1 = abs(q0), abs(q1)
                net[u] += dq * delta
                gross[u] += (a1 - a0) * abs_delta
                if mtm_j:
                    mtm += dq * mtm_j
                if som:
                    short_min += (max(-q1, 0.0) - max(-q0, 0.0)) * som
                if pim or pmm:
                    perp_im += (a1 - a0) * pim
                    perp_mm += (a1 - a0) * pmm
                if orc:
                    oracle += (a1 - a0) * orc
                if cu:
                    conc += (a1 * math.sqrt(a1) - a0 * math.sqrt(a0)) * cu
                if g >= 0:
                    nets[g] = nets.get(g, 0.0) + dq * coins_j
        index = self._group_index
        naked = sum(-v * index[g] for g, v in nets.items() if v < 0.0)

        # worst scenario per underlying, then over underlyings (earliest on ties)
        starts = self._starts
        if self._block:
            blocks = pnl.reshape(u_n, self._block)
            lows, arg = blocks.min(axis=1).tolist(), blocks.argmin(axis=1).tolist()
        else:
            arg = [int(pnl[starts[u] : starts[u + 1]].argmin()) for u in range(u_n)]
            lows = [float(pnl[starts[u] + arg[u]]) for u in range(u_n)]
        loss = [-low if low < 0.0 else 0.0 for low in lows]
        worst, worst_val = 0, math.inf
        for u, low in enumerate(lows):
            if low < worst_val:
                worst, worst_val = starts[u] + arg[u], low
        standalone = sum(loss)
        cross = standalone
        if self._offset_mode:
            cross = self._offset(loss, arg, standalone, row, after)

        floor = 0.0
        f_net, f_hedged = self._min_delta
        for nu, gu, price in zip(net, gross, self._index, strict=True):
            abs_net = abs(nu)
            hedged = max(gu - abs_net, 0.0) / 2.0
            floor += (f_net * abs_net + f_hedged * hedged) * price
        scen = max(cross, floor, short_min)
        naked_im, naked_mm, conc_mm = self._addon_rates
        im = self._im_factor * scen + perp_im + naked_im * naked + oracle + conc + extra
        mm = self._mm_factor * scen + perp_mm + naked_mm * naked + conc_mm * conc
        prec, scale = self._prec, self._scale
        im_r, mm_r = _round(im, prec, scale, True), _round(mm, prec, scale, True)
        equity = _round(_round(collateral, prec, scale, False) + mtm, prec, scale, False)
        return WhatIfResult(im_r, mm_r, equity, scen, worst, equity < mm_r)

    def _offset(
        self,
        loss: list[float],
        arg: list[int],
        standalone: float,
        row: int,
        after: tuple[list[int], list[float]],
    ) -> float:
        """Cross scenario requirement after offsets (see :func:`margin.engine._offset`)."""
        unlisted = 0.0
        for u in self._unlisted:
            unlisted += loss[u]
        if self._joint:
            portfolio = self._joint_loss(row, *after) + unlisted
        else:
            # x_u = loss_u x (-sign of the spot move of u's worst scenario)
            quad = 0.0
            for u in self._listed:
                quad += loss[u] * loss[u]
            direction = self._direction
            x = [loss[u] * direction[u][arg[u]] for u in range(self._n_und)]
            for a, b, rho in self._pairs:
                quad += rho * x[a] * x[b]
            portfolio = math.sqrt(max(quad, 0.0)) + unlisted
        cap = self._cap
        if self._diversification_cap:
            cross = standalone - cap * max(standalone - portfolio, 0.0)
        else:
            cross = max(portfolio, (1.0 - cap) * standalone)
        return min(cross, standalone)

    def _joint_loss(self, row: int, js: list[int], qs: list[float]) -> float:
        """VaR or ES of the joint-scenario losses of positions ``qs`` of ``js`` and ``row``'s
        collateral."""
        risk = self.ctx.risk
        assert risk.joint_inst is not None and risk.joint_asset is not None
        c = self.book.collateral
        lo, hi = c.indptr[row : row + 2].tolist()
        idx: IntArray = np.asarray(js, dtype=np.intp)
        pnl = (
            np.asarray(qs) @ risk.joint_inst[idx]
            + c.data[lo:hi] @ risk.joint_asset[c.indices[lo:hi]]
        )
        return float(_tail_loss(-pnl[None, :], self._confidence, self._measure)[0])
