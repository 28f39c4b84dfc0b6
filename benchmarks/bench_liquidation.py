"""Liquidation benchmark: plans for every account under MM of the engine benchmark's book.

The book (1,000,000 synthetic accounts over real 2024 closing prices and DVOL, see
``bench_engine``) leaves about 1.4 % of its accounts under MM. Prints the wall and CPU time of
:func:`margin.liquidation.liquidation_plan` for all of them (the margin result and context are
computed beforehand and not timed), the number of rounds and orders, and how the accounts end;
then the same for a stressed book (every collateral amount halved: about 5 % under MM).
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.bench_engine import benchmark_methodology, synthetic_book
from margin.book import Book
from margin.engine import MarginContext, compute_margin, prepare
from margin.liquidation import liquidation_plan
from margin.methodology import Methodology

MAX_STEPS = 100


def run(n_accounts: int = 1_000_000, repeats: int = 3) -> None:
    """Build the engine benchmark's book, time the liquidation plan; print the figures."""
    book = synthetic_book(n_accounts)
    methodology = benchmark_methodology()
    ctx = prepare(book, methodology)
    _plan_figures(book, methodology, ctx, "book", repeats)
    stressed = Book(
        book.instruments,
        book.accounts,
        book.positions,
        book.assets,
        book.collateral * 0.5,
        book.market,
    )
    _plan_figures(stressed, methodology, ctx, "stressed book (collateral halved)", 1)


def _plan_figures(
    book: Book, methodology: Methodology, ctx: MarginContext, name: str, repeats: int
) -> None:
    """Time the plan for every account of ``book`` under MM (median of ``repeats``); print."""
    result = compute_margin(book, methodology, context=ctx)
    under = np.flatnonzero(result.liquidatable)
    held = int(np.diff(book.positions.indptr)[under].sum())
    print(
        f"{name}: {book.n_accounts:,} accounts; {under.size:,} under MM holding {held:,} positions "
        f"(mean {held / max(under.size, 1):.1f})"
    )
    walls, cpus = [], []
    plan = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        plan = liquidation_plan(book, methodology, result, context=ctx, max_steps=MAX_STEPS)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    assert plan is not None
    last = plan.groupby("account", sort=False).tail(1)
    n_restored = int(last["restored"].sum())
    n_capped = int(((last["step"] == MAX_STEPS - 1) & ~last["restored"]).sum())
    closed = ~last["restored"] & (last["step"] < MAX_STEPS - 1)
    n_bankrupt = int((closed & (last["equity_after"] < 0)).sum())
    print(
        f"liquidation_plan: {np.median(walls):.2f} s median wall of {repeats} "
        f"(min {min(walls):.2f} s), {np.median(cpus):.2f} s CPU; "
        f"{int(plan['step'].max()) + 1 if len(plan) else 0} rounds, {len(plan):,} orders "
        f"({len(plan) / max(under.size, 1):.1f} per account, "
        f"{np.median(walls) / max(len(plan), 1) * 1e6:.1f} us wall per order); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"outcome: {n_restored:,} accounts back above IM, {n_capped:,} stopped at the "
        f"{MAX_STEPS}-order cap, {int(closed.sum()):,} fully closed without reaching IM "
        f"({n_bankrupt:,} of them with negative equity), "
        f"{under.size - len(last):,} already above IM (no order); "
        f"slippage {plan['slippage_usd'].sum():,.0f} USD on {plan['notional_usd'].sum():,.0f} "
        f"USD closed"
    )


if __name__ == "__main__":
    run()
