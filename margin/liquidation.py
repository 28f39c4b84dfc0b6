"""Partial liquidation plans for accounts under maintenance margin (an output, no mutation).

For each liquidatable account (equity < MM) the plan repeatedly closes a chunk of the position
contributing most to the loss of the account's current worst scenario (``q x risk`` most
negative), re-evaluates the account's margin with the cached risk arrays
(:class:`~margin.whatif.WhatIf`), and stops once ``equity >= target x IM`` or nothing is left.

Closing at the mark leaves equity unchanged apart from the estimated slippage, taken from a
square-root impact model (Almgren et al. 2005; Tóth et al. 2011)::

    cost_usd = impact_coefficient x sigma_daily x |Q| x N x sqrt(|Q| / V)

with ``Q`` the contracts closed, ``N`` the USD notional per contract, ``V`` the instrument's
liquidity in contracts per day (book market ``liquidity``; the cost is 0 when unknown) and
``sigma_daily`` the underlying's daily volatility (decimal).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from margin.book import Book
from margin.engine import MarginContext, compute_margin, prepare
from margin.methodology import Methodology
from margin.result import MarginResult
from margin.whatif import WhatIf

__all__ = ["PLAN_COLUMNS", "liquidation_plan"]

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
        The book and its methodology; ``result`` and ``context`` are reused when given.
    target
        Stop once equity >= ``target`` x IM (1.0: back above IM).
    chunk_fraction, min_chunk_usd
        Each order closes ``chunk_fraction`` of the position, at least ``min_chunk_usd`` of
        notional (or the whole position if smaller).
    sigma_daily
        Daily decimal volatility per underlying for the impact model (default 0.03).
    impact_coefficient
        Dimensionless ``Y`` of the square-root law (order 1).
    max_steps
        Orders per account at most.

    Returns
    -------
    DataFrame
        One row per order with :data:`PLAN_COLUMNS`; ``quantity`` is the signed trade
        (opposite to the position), ``restored`` is True on an account's last row when the
        target was reached.
    """
    if not 0.0 < chunk_fraction <= 1.0:
        raise ValueError(f"chunk_fraction must lie in (0, 1], got {chunk_fraction}")
    ctx = context if context is not None else prepare(book, methodology)
    res = result if result is not None else compute_margin(book, methodology, context=ctx)
    whatif = WhatIf(book, methodology, context=ctx)
    sig = sigma_daily or {}
    table = book.instruments
    und_sigma = np.array([sig.get(u, 0.03) for u in table.underlyings])[table.underlying]
    liquidity = book.market.liquidity
    liq = liquidity if liquidity is not None else np.full(len(table), np.inf)
    notional = ctx.risk.notional_inst
    rows: list[dict[str, object]] = []
    for acct in np.flatnonzero(res.liquidatable):
        p = book.positions
        lo, hi = p.indptr[acct], p.indptr[acct + 1]
        held = dict(zip(p.indices[lo:hi].tolist(), p.data[lo:hi].tolist(), strict=True))
        equity = float(res.equity[acct])
        current = whatif.margin_after(int(acct))
        for step in range(max_steps):
            if equity >= target * current.im or not held:
                break
            inst, qty = _top_contributor(held, whatif, current.worst_scenario)
            chunk = max(abs(qty) * chunk_fraction, min_chunk_usd / max(notional[inst], 1e-12))
            trade = -np.sign(qty) * min(chunk, abs(qty))
            cost = 0.0
            if np.isfinite(liq[inst]):
                cost = (
                    impact_coefficient
                    * und_sigma[inst]
                    * abs(trade)
                    * notional[inst]
                    * np.sqrt(abs(trade) / liq[inst])
                )
            remaining = qty + trade
            if abs(remaining) <= 1e-12 * max(abs(qty), 1.0):
                held.pop(inst)
            else:
                held[inst] = remaining
            equity -= cost
            idx = np.fromiter(held.keys(), dtype=np.intp, count=len(held))
            q = np.fromiter(held.values(), dtype=np.float64, count=len(held))
            current = whatif.margin_of_positions(int(acct), idx, q)
            rows.append(
                {
                    "account": book.accounts[acct],
                    "step": step,
                    "instrument": table.ids[inst],
                    "quantity": float(trade),
                    "notional_usd": float(abs(trade) * notional[inst]),
                    "slippage_usd": float(cost),
                    "im_after": current.im,
                    "mm_after": current.mm,
                    "equity_after": equity,
                    "restored": bool(equity >= target * current.im),
                }
            )
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


def _top_contributor(held: dict[int, float], whatif: WhatIf, worst: int) -> tuple[int, float]:
    """The position with the most negative P&L in the worst scenario (ties: larger notional,
    then lower instrument number, so plans are deterministic)."""
    insts = np.fromiter(held.keys(), dtype=np.intp, count=len(held))
    qty = np.fromiter(held.values(), dtype=np.float64, count=len(held))
    contribution = qty * whatif.risk_column(worst)[insts]
    size = np.abs(qty) * whatif.ctx.risk.notional_inst[insts]
    order = np.lexsort((insts, -size, contribution))
    best = int(order[0])
    return int(insts[best]), float(qty[best])
