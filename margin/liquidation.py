"""Partial liquidation plans for accounts under maintenance margin (an output, no mutation).

For each liquidatable account (equity < MM) the plan repeatedly closes a chunk of the position
contributing most to the loss of the account's current worst scenario (``q x risk`` most
negative; ties: larger USD notional, then lower instrument number), re-evaluates the account's
margin, and stops once ``equity >= target x IM``, nothing is left, or ``max_steps`` orders
were issued.

All liquidatable accounts advance together, one order each per *round*: a round gathers the
contribution of every held position from the risk arrays (one column gather), picks each
account's top contributor with segmented reductions (``np.minimum.reduceat``), closes one
chunk of it, and re-evaluates only the accounts still being liquidated with
:func:`~margin.engine.compute_margin` on a sub-book of their reduced positions (scanned in
double precision, so the figures are those :class:`~margin.whatif.WhatIf` gives for the same
positions). Python loops run over rounds only, never over accounts.

Closing at the mark leaves equity unchanged apart from the estimated slippage, taken from a
square-root impact model (Almgren et al. 2005; Tóth et al. 2011)::

    cost_usd = impact_coefficient x sigma_daily x |Q| x N x sqrt(|Q| / V)

with ``Q`` the contracts closed, ``N`` the USD notional per contract, ``V`` the instrument's
liquidity in contracts per day (book market ``liquidity``; the cost is 0 when unknown) and
``sigma_daily`` the underlying's daily volatility (decimal).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from margin.book import Book
from margin.engine import MarginContext, compute_margin, prepare
from margin.methodology import Methodology
from margin.result import MarginResult
from margin.typing import BoolArray, FloatArray, IntArray

__all__ = ["DEFAULT_SIGMA_DAILY", "PLAN_COLUMNS", "liquidation_plan"]

PLAN_COLUMNS = [
    "account",
    "step",
    "instrument",
    "quantity",
    "notional_usd",
    "slippage_usd",
    "im_after",
    "mm_after",
    "equity_after",
    "restored",
]

#: Daily decimal volatility of an underlying missing from ``sigma_daily``.
DEFAULT_SIGMA_DAILY = 0.03

#: A position whose remainder is at most this share of its size (or of one contract) is closed.
_CLOSE_TOLERANCE = 1e-12


class _Margins:
    """IM, MM and worst IM-grid scenario of accounts with replaced positions (vectorized).

    Scans in double precision, like :class:`~margin.whatif.WhatIf`; with separate MM grids the
    MM is the smaller of the IM-grid and MM-grid figures, as in
    :func:`~margin.engine.compute_margin`.
    """

    def __init__(self, book: Book, methodology: Methodology, context: MarginContext) -> None:
        self.book = book
        self.im_methodology = methodology.im_view()
        self.im_context = _double_precision(context)
        self.mm_methodology = methodology.mm_view()
        self.mm_context = (
            None
            if self.mm_methodology is None
            else prepare(book, self.mm_methodology, scan_precision="float64")
        )

    def __call__(
        self, rows: IntArray, positions: sp.csr_matrix
    ) -> tuple[FloatArray, FloatArray, IntArray]:
        """Figures of the book's account ``rows`` holding ``positions`` (rows x instruments)."""
        book = self.book
        sub = Book(
            instruments=book.instruments,
            accounts=book.accounts[rows],
            positions=positions,
            assets=book.assets,
            collateral=book.collateral[rows],
            market=book.market,
        )
        res = compute_margin(sub, self.im_methodology, context=self.im_context)
        mm = res.mm
        if self.mm_methodology is not None:
            mm_res = compute_margin(sub, self.mm_methodology, context=self.mm_context)
            mm = np.minimum(mm, mm_res.mm)
        return res.im, mm, res.worst_scenario


def _double_precision(context: MarginContext) -> MarginContext:
    if context.scan_precision == "float64":
        return context
    return dataclasses.replace(context, scan_precision="float64")


def _risk_matrix(context: MarginContext, n_instruments: int) -> FloatArray:
    """Weighted P&L per contract, instruments x global scenario columns (zero outside the
    instrument's own underlying block)."""
    risk = context.risk
    sizes = [len(s) for s in risk.sets]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
    out = np.zeros((n_instruments, int(starts[-1])))
    for u, (cols, block) in enumerate(zip(risk.inst_of, risk.risk_inst_scen, strict=True)):
        out[cols, starts[u] : starts[u + 1]] = block
    return out


def _top_contributors(
    positions: sp.csr_matrix, worst: IntArray, risk: FloatArray, notional: FloatArray
) -> IntArray:
    """Stored-entry index of each row's position with the most negative P&L in that row's
    worst scenario (ties: larger USD notional, then lower instrument number).

    Segmented reductions over the CSR rows (no sort): every row must hold at least one
    position and its column indices must be sorted.
    """
    starts = positions.indptr[:-1]
    counts = np.diff(positions.indptr)
    entry_row = np.repeat(np.arange(counts.size), counts)
    inst = positions.indices
    qty = positions.data
    contribution = qty * risk[inst, worst[entry_row]]
    best = contribution == np.minimum.reduceat(contribution, starts)[entry_row]
    size = np.where(best, np.abs(qty) * notional[inst], -np.inf)
    best &= size == np.maximum.reduceat(size, starts)[entry_row]
    # the first remaining entry of a row holds its lowest instrument number
    entry = np.where(best, np.arange(qty.size), qty.size)
    return np.asarray(np.minimum.reduceat(entry, starts), dtype=np.intp)


def _impact_cost(
    trade: FloatArray,
    inst: IntArray,
    sigma: FloatArray,
    notional: FloatArray,
    liquidity: FloatArray,
    coefficient: float,
) -> FloatArray:
    """Square-root impact cost (USD) of closing ``|trade|`` contracts; 0 without liquidity."""
    size = np.abs(trade)
    liq = liquidity[inst]
    known = np.isfinite(liq)
    ratio = np.divide(size, liq, out=np.zeros_like(size), where=known)
    cost = coefficient * sigma[inst] * size * notional[inst] * np.sqrt(ratio)
    return np.where(known, cost, 0.0)


@dataclasses.dataclass
class _Orders:
    """Columns of the orders issued so far, one array per round."""

    row: list[IntArray] = dataclasses.field(default_factory=list)
    step: list[IntArray] = dataclasses.field(default_factory=list)
    inst: list[IntArray] = dataclasses.field(default_factory=list)
    quantity: list[FloatArray] = dataclasses.field(default_factory=list)
    notional: list[FloatArray] = dataclasses.field(default_factory=list)
    slippage: list[FloatArray] = dataclasses.field(default_factory=list)
    im: list[FloatArray] = dataclasses.field(default_factory=list)
    mm: list[FloatArray] = dataclasses.field(default_factory=list)
    equity: list[FloatArray] = dataclasses.field(default_factory=list)
    restored: list[BoolArray] = dataclasses.field(default_factory=list)

    def frame(self, book: Book) -> pd.DataFrame:
        """The plan, grouped by account (book order), orders in step order."""

        def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

        row, step = cat(self.row, np.intp), cat(self.step, np.int64)
        order = np.lexsort((step, row))
        return pd.DataFrame(
            {
                "account": book.accounts[row[order]],
                "step": step[order],
                "instrument": book.instruments.ids[cat(self.inst, np.intp)[order]],
                "quantity": cat(self.quantity, np.float64)[order],
                "notional_usd": cat(self.notional, np.float64)[order],
                "slippage_usd": cat(self.slippage, np.float64)[order],
                "im_after": cat(self.im, np.float64)[order],
                "mm_after": cat(self.mm, np.float64)[order],
                "equity_after": cat(self.equity, np.float64)[order],
                "restored": cat(self.restored, np.bool_)[order],
            },
            columns=PLAN_COLUMNS,
        )


def liquidation_plan(
    book: Book,
    methodology: Methodology,
    result: MarginResult | None = None,
    *,
    context: MarginContext | None = None,
    target: float = 1.0,
    chunk_fraction: float = 0.25,
    min_chunk_usd: float = 1_000.0,
    sigma_daily: Mapping[str, float] | None = None,
    impact_coefficient: float = 1.0,
    max_steps: int = 100,
) -> pd.DataFrame:
    """Liquidation orders for every account under MM, largest worst-scenario contributor first.

    Parameters
    ----------
    book, methodology
        The book and its methodology; ``result`` and ``context`` (from
        :func:`~margin.engine.prepare` for this book and methodology) are reused when given.
    target
        Stop once equity >= ``target`` x IM (1.0: back above IM).
    chunk_fraction, min_chunk_usd
        Each order closes ``chunk_fraction`` of the position (contracts), at least
        ``min_chunk_usd`` of USD notional (or the whole position if smaller).
    sigma_daily
        Daily decimal volatility per underlying for the impact model (default
        :data:`DEFAULT_SIGMA_DAILY`, 0.03).
    impact_coefficient
        Dimensionless ``Y`` of the square-root law (order 1).
    max_steps
        Orders per account at most.

    Returns
    -------
    DataFrame
        One row per order with :data:`PLAN_COLUMNS`, grouped by account in book order and
        numbered by ``step`` from 0: ``quantity`` is the signed trade in contracts (opposite to
        the position), ``notional_usd`` and ``slippage_usd`` are USD, ``im_after``,
        ``mm_after`` and ``equity_after`` the account's figures after the order (USD;
        equity = equity before liquidation minus the slippage so far), and ``restored`` is
        True on an account's last row when the target was reached. The book is not modified.
    """
    if not 0.0 < chunk_fraction <= 1.0:
        raise ValueError(f"chunk_fraction must lie in (0, 1], got {chunk_fraction}")
    ctx = context if context is not None else prepare(book, methodology)
    res = result if result is not None else compute_margin(book, methodology, context=ctx)
    orders = _Orders()
    rows = np.flatnonzero(res.liquidatable).astype(np.intp)
    if rows.size == 0 or max_steps <= 0:
        return orders.frame(book)

    table = book.instruments
    sig = sigma_daily or {}
    und_sigma = np.array([sig.get(u, DEFAULT_SIGMA_DAILY) for u in table.underlyings])
    sigma = und_sigma[table.underlying]
    liquidity = book.market.liquidity
    liq = liquidity if liquidity is not None else np.full(len(table), np.inf)
    notional = ctx.risk.notional_inst
    risk = _risk_matrix(ctx, len(table))
    margins = _Margins(book, methodology, ctx)

    # state of the accounts still being liquidated (row numbers into the book)
    held = sp.csr_matrix(book.positions[rows])
    held.sort_indices()
    equity = np.asarray(res.equity[rows], dtype=np.float64).copy()
    im, _, worst = margins(rows, held)
    keep = (equity < target * im) & (np.diff(held.indptr) > 0)

    for step in range(max_steps):
        rows, held, equity, worst = rows[keep], held[keep], equity[keep], worst[keep]
        if rows.size == 0:
            break
        pick = _top_contributors(held, worst, risk, notional)
        inst = held.indices[pick].astype(np.intp)
        qty = held.data[pick]
        chunk = np.maximum(
            np.abs(qty) * chunk_fraction, min_chunk_usd / np.maximum(notional[inst], 1e-12)
        )
        trade = -np.sign(qty) * np.minimum(chunk, np.abs(qty))
        cost = _impact_cost(trade, inst, sigma, notional, liq, impact_coefficient)
        remaining = qty + trade
        closed = np.abs(remaining) <= _CLOSE_TOLERANCE * np.maximum(np.abs(qty), 1.0)
        held.data[pick] = np.where(closed, 0.0, remaining)
        held.eliminate_zeros()
        equity = equity - cost
        im, mm, worst = margins(rows, held)
        restored = equity >= target * im
        orders.row.append(rows)
        orders.step.append(np.full(rows.size, step, dtype=np.int64))
        orders.inst.append(inst)
        orders.quantity.append(trade)
        orders.notional.append(np.abs(trade) * notional[inst])
        orders.slippage.append(cost)
        orders.im.append(im)
        orders.mm.append(mm)
        orders.equity.append(equity)
        orders.restored.append(restored)
        keep = ~restored & (np.diff(held.indptr) > 0)
    return orders.frame(book)
