"""Partial liquidation plans: largest worst-scenario contributor first, back above IM.

The vectorized plan (all accounts advance one order per round) is compared with a
straightforward per-account reference written below from the specification: one account at a
time, one order at a time, every re-evaluation a :class:`~margin.whatif.WhatIf` query.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from engine_books import BTC, instruments_frame, market_frames
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from benchmarks.bench_engine import benchmark_methodology, synthetic_book
from margin.book import Book
from margin.engine import compute_margin, prepare
from margin.liquidation import PLAN_COLUMNS, liquidation_plan
from margin.methodology import Methodology
from margin.whatif import WhatIf

METHOD = Methodology(offsets={"mode": "none"})
#: separate, narrower MM grids: MM is scanned a second time (as from a parameter file)
METHOD_MM_GRID = Methodology(
    offsets={
        "mode": "correlation",
        "underlyings": ("BTC", "ETH"),
        "correlation": ((1, 0.8), (0.8, 1)),
    },
    mm_scenarios={"BTC": {"price_range": 0.1, "n_price_steps": 5}, "ETH": {"price_range": 0.12}},
    addons={"concentration": 0.05},
)


def reference_plan(
    book: Book,
    methodology: Methodology,
    *,
    target: float = 1.0,
    chunk_fraction: float = 0.25,
    min_chunk_usd: float = 1_000.0,
    sigma_daily: Mapping[str, float] | None = None,
    impact_coefficient: float = 1.0,
    max_steps: int = 100,
) -> pd.DataFrame:
    """The plan account by account, order by order (the specification, unvectorized)."""
    ctx = prepare(book, methodology)
    res = compute_margin(book, methodology, context=ctx)
    whatif = WhatIf(book, methodology, context=ctx)
    table = book.instruments
    sig = sigma_daily or {}
    liq = (
        book.market.liquidity if book.market.liquidity is not None else np.full(len(table), np.inf)
    )
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
            column = whatif.risk_column(current.worst_scenario)
            # most negative contribution, then larger notional, then lower instrument number
            inst = min(held, key=lambda i: (held[i] * column[i], -abs(held[i]) * notional[i], i))
            qty = held[inst]
            chunk = max(abs(qty) * chunk_fraction, min_chunk_usd / max(notional[inst], 1e-12))
            trade = -np.sign(qty) * min(chunk, abs(qty))
            cost = 0.0
            if np.isfinite(liq[inst]):
                sigma = sig.get(table.underlyings[table.underlying[inst]], 0.03)
                cost = (
                    impact_coefficient
                    * sigma
                    * abs(trade)
                    * notional[inst]
                    * np.sqrt(abs(trade) / liq[inst])
                )
            remaining = qty + trade
            if abs(remaining) <= 1e-12 * max(abs(qty), 1.0):
                del held[inst]
            else:
                held[inst] = remaining
            equity -= cost
            current = whatif.margin_of_positions(
                int(acct), np.array(list(held), dtype=np.intp), np.array(list(held.values()))
            )
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


def assert_same_plan(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    """Same orders (accounts, steps, instruments exactly; quantities to 1e-12 relative) and the
    same figures (requirements to the cent: both round up to 0.01 USD)."""
    assert list(got.columns) == PLAN_COLUMNS
    assert len(got) == len(ref)
    for col in ("account", "step", "instrument", "restored"):
        assert got[col].tolist() == ref[col].tolist(), col
    for col in ("quantity", "notional_usd", "slippage_usd", "equity_after"):
        np.testing.assert_allclose(
            got[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-12, atol=1e-9, err_msg=col
        )
    for col in ("im_after", "mm_after"):
        np.testing.assert_allclose(
            got[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-9, atol=0.011, err_msg=col
        )


def applied(book: Book, plan: pd.DataFrame) -> Book:
    """The book with the orders of ``plan`` executed one after the other (positions only)."""
    held = book.positions.todok()
    acct = pd.Index(book.accounts).get_indexer(plan["account"])
    inst = pd.Index(book.instruments.ids).get_indexer(plan["instrument"])
    for a, i, q in zip(acct, inst, plan["quantity"], strict=True):
        before = held[a, i]
        assert before != 0.0 and np.sign(q) == -np.sign(before)  # closes, never opens or flips
        after = before + q
        held[a, i] = 0.0 if abs(after) <= 1e-12 * max(abs(before), 1.0) else after
    positions = sp.csr_matrix(held)
    positions.eliminate_zeros()
    positions.sort_indices()
    return Book(
        book.instruments, book.accounts, positions, book.assets, book.collateral, book.market
    )


def _book() -> Book:
    market, und = market_frames()
    market = market.assign(liquidity=1_000.0)
    pos = pd.DataFrame(
        {
            "account": ["weak", "weak", "weak", "safe"],
            "instrument": ["BTC-PERP", "ETH-PERP", "BTC-55000-C", "BTC-PERP"],
            "quantity": [4.0, 20.0, -1.0, 0.1],
        }
    )
    col = pd.DataFrame(
        {"account": ["weak", "safe"], "asset": ["USD", "USD"], "amount": [30_000.0, 50_000.0]}
    )
    return Book.from_frames(instruments_frame(), pos, col, market, und)


def test_plan_closes_largest_contributor_first_until_above_im() -> None:
    book = _book()
    before = book.positions.copy()
    res = compute_margin(book, METHOD)
    assert list(res.liquidatable) == [False, True]  # accounts sorted: safe, weak
    plan = liquidation_plan(book, METHOD, res, chunk_fraction=0.5)
    assert list(plan.columns) == PLAN_COLUMNS
    assert set(plan["account"]) == {"weak"}
    # the 4 BTC long perp (200k notional) loses most at -16%: it goes first, half of it
    first = plan.iloc[0]
    assert first["instrument"] == "BTC-PERP" and first["quantity"] == pytest.approx(-2.0)
    assert plan["restored"].iloc[-1]
    assert plan["equity_after"].iloc[-1] >= plan["im_after"].iloc[-1]
    assert not plan["restored"].iloc[:-1].any()
    # IM falls with every order; equity only loses the slippage
    assert np.all(np.diff(plan["im_after"]) <= 1e-9)
    assert plan["equity_after"].iloc[-1] == pytest.approx(
        res.equity[1] - plan["slippage_usd"].sum()
    )
    # square-root impact: Y sigma |Q| N sqrt(|Q| / V) with sigma 3 %, V 1,000 contracts
    assert first["slippage_usd"] == pytest.approx(0.03 * 2.0 * BTC * np.sqrt(2.0 / 1_000.0))
    # the book itself is untouched
    assert (book.positions != before).nnz == 0
    assert_same_plan(plan, reference_plan(book, METHOD, chunk_fraction=0.5))


def test_no_plan_for_healthy_accounts() -> None:
    book = _book().select_accounts(np.array([0]))
    plan = liquidation_plan(book, METHOD)
    assert plan.empty and list(plan.columns) == PLAN_COLUMNS
    with pytest.raises(ValueError, match="chunk_fraction"):
        liquidation_plan(book, METHOD, chunk_fraction=0.0)


def test_max_steps_bounds_the_orders_per_account() -> None:
    book = _book()
    plan = liquidation_plan(book, METHOD, chunk_fraction=0.1, min_chunk_usd=0.0, max_steps=3)
    assert plan["step"].tolist() == [0, 1, 2]
    assert not plan["restored"].any()
    # the same position (BTC perp, 10 % of what is left each time) stays the top contributor
    assert plan["quantity"].tolist() == pytest.approx([-0.4, -0.36, -0.324])
    assert liquidation_plan(book, METHOD, max_steps=0).empty


def test_slippage_is_zero_without_liquidity_and_scales_with_sigma() -> None:
    book = _book()
    no_liquidity = Book(
        book.instruments,
        book.accounts,
        book.positions,
        book.assets,
        book.collateral,
        dataclasses.replace(book.market, liquidity=None),
    )
    plan = liquidation_plan(no_liquidity, METHOD, chunk_fraction=0.5)
    assert (plan["slippage_usd"] == 0.0).all()
    assert plan["equity_after"].nunique() == 1
    base = liquidation_plan(book, METHOD, chunk_fraction=0.5)
    doubled = liquidation_plan(
        book, METHOD, chunk_fraction=0.5, sigma_daily={"BTC": 0.06, "ETH": 0.06}
    )
    assert doubled["slippage_usd"].iloc[0] == pytest.approx(2 * base["slippage_usd"].iloc[0])


# ---------------------------------------------------------------- against the reference

SYNTH = synthetic_book(3_000, seed=11)
SYNTH_METHOD = benchmark_methodology()


def _liquidatable_subbook(book: Book, methodology: Methodology, limit: int) -> Book:
    liquidatable = compute_margin(book, methodology).liquidatable
    rows = np.flatnonzero(liquidatable)[:limit]
    healthy = np.flatnonzero(~liquidatable)[:5]
    return book.select_accounts(np.sort(np.concatenate([rows, healthy])))


def test_equals_reference_on_a_realistic_book() -> None:
    """Perps, futures, option spreads over three underlyings, correlation offsets,
    concentration add-on: the vectorized plan issues exactly the reference's orders."""
    book = _liquidatable_subbook(SYNTH, SYNTH_METHOD, 25)
    assert compute_margin(book, SYNTH_METHOD).liquidatable.sum() == 25
    sigma = {"BTC": 0.025, "ETH": 0.035}
    got = liquidation_plan(book, SYNTH_METHOD, max_steps=30, sigma_daily=sigma)
    assert got["account"].nunique() >= 20
    assert_same_plan(got, reference_plan(book, SYNTH_METHOD, max_steps=30, sigma_daily=sigma))


def test_equals_reference_with_separate_mm_grids() -> None:
    positions = [
        ("a", "BTC-PERP", 3.0),
        ("a", "BTC-50000-P", -4.0),
        ("a", "ETH-PERP", -30.0),
        ("b", "BTC-45000-C", -6.0),
        ("b", "BTC-55000-C", 5.0),
        ("b", "ETH-2500-P", -40.0),
        ("c", "BTC-INV", 20_000.0),
        ("c", "BTC-FUT", -1.0),
    ]
    collateral = [("a", "USD", 30_000.0), ("b", "USD", 25_000.0), ("c", "BTC", 0.05)]
    market, und = market_frames()
    market = market.assign(liquidity=np.linspace(50.0, 5_000.0, len(market)))
    frame = pd.DataFrame(positions, columns=["account", "instrument", "quantity"])
    coll = pd.DataFrame(collateral, columns=["account", "asset", "amount"])
    book = Book.from_frames(instruments_frame(), frame, coll, market, und)
    res = compute_margin(book, METHOD_MM_GRID)
    assert res.liquidatable.sum() >= 2
    for target in (1.0, 1.5):
        got = liquidation_plan(book, METHOD_MM_GRID, target=target, min_chunk_usd=500.0)
        assert_same_plan(
            got, reference_plan(book, METHOD_MM_GRID, target=target, min_chunk_usd=500.0)
        )
        # each account stops restored, fully closed, or after max_steps (100) orders
        left = np.diff(applied(book, got).positions.indptr)
        for name, orders in got.groupby("account"):
            row = list(book.accounts).index(name)
            assert orders["restored"].iloc[-1] or left[row] == 0 or len(orders) == 100


INSTRUMENTS = instruments_frame()["instrument"].tolist()


@st.composite
def small_books(draw: st.DrawFn) -> Book:
    """One to four accounts, each with one to five positions and little USD collateral."""
    n_accounts = draw(st.integers(1, 4))
    positions, collateral = [], []
    for a in range(n_accounts):
        insts = draw(st.lists(st.sampled_from(INSTRUMENTS), min_size=1, max_size=5, unique=True))
        for inst in insts:
            scale = 10_000.0 if inst == "BTC-INV" else (20.0 if inst.startswith("ETH") else 1.0)
            qty = draw(st.floats(0.05, 5.0)) * draw(st.sampled_from([-1.0, 1.0])) * scale
            positions.append((f"acct-{a}", inst, round(qty, 3) or 1.0))
        collateral.append((f"acct-{a}", "USD", draw(st.floats(0.0, 40_000.0))))
    liquidity = draw(st.sampled_from([np.inf, 10.0, 1_000.0]))
    market, und = market_frames()
    market = market.assign(liquidity=liquidity)
    frame = pd.DataFrame(positions, columns=["account", "instrument", "quantity"])
    coll = pd.DataFrame(collateral, columns=["account", "asset", "amount"])
    return Book.from_frames(instruments_frame(), frame, coll, market, und)


METHODS = (METHOD, METHOD_MM_GRID)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    book=small_books(),
    method=st.sampled_from(METHODS),
    target=st.sampled_from([0.5, 1.0, 1.3]),
    chunk_fraction=st.sampled_from([0.1, 0.25, 0.6, 1.0]),
    min_chunk_usd=st.sampled_from([0.0, 1_000.0, 30_000.0]),
)
def test_vectorized_plan_equals_per_account_reference(
    book: Book, method: Methodology, target: float, chunk_fraction: float, min_chunk_usd: float
) -> None:
    got = liquidation_plan(
        book,
        method,
        target=target,
        chunk_fraction=chunk_fraction,
        min_chunk_usd=min_chunk_usd,
        max_steps=25,
    )
    ref = reference_plan(
        book,
        method,
        target=target,
        chunk_fraction=chunk_fraction,
        min_chunk_usd=min_chunk_usd,
        max_steps=25,
    )
    assert_same_plan(got, ref)
    event(f"orders: {len(got) if len(got) < 10 else '10 or more'}")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(book=small_books(), method=st.sampled_from(METHODS), target=st.sampled_from([1.0, 1.5]))
def test_after_the_plan_every_account_is_restored_or_closed(
    book: Book, method: Methodology, target: float
) -> None:
    res = compute_margin(book, method)
    plan = liquidation_plan(book, method, res, target=target, max_steps=10_000)
    after = applied(book, plan)
    ctx = prepare(after, method, scan_precision="float64")
    res_after = compute_margin(after, method, context=ctx)
    n_left = np.diff(after.positions.indptr)
    whatif = WhatIf(book, method)
    for row in np.flatnonzero(res.liquidatable):
        orders = plan[plan["account"] == book.accounts[row]]
        if res.equity[row] >= target * whatif.margin_after(int(row)).im:
            assert orders.empty  # under MM but already above the target: nothing to do
            continue
        last = orders.iloc[-1]
        # the reported figures are those of the book with the orders executed
        assert last["im_after"] == pytest.approx(res_after.im[row], abs=0.011)
        assert last["equity_after"] == pytest.approx(res.equity[row] - orders["slippage_usd"].sum())
        assert last["restored"] == (last["equity_after"] >= target * last["im_after"])
        assert last["restored"] or n_left[row] == 0
        assert not orders["restored"].iloc[:-1].any()
    # healthy accounts are untouched
    untouched = ~np.isin(book.accounts, plan["account"].unique())
    assert (after.positions[untouched] != book.positions[untouched]).nnz == 0


def test_realistic_book_is_restored_or_closed_with_enough_steps() -> None:
    book = _liquidatable_subbook(SYNTH, SYNTH_METHOD, 60)
    res = compute_margin(book, SYNTH_METHOD)
    plan = liquidation_plan(book, SYNTH_METHOD, res, max_steps=100_000)
    after = applied(book, plan)
    left = np.diff(after.positions.indptr)
    last = plan.groupby("account", sort=False).last()
    rows = pd.Index(book.accounts).get_indexer(last.index)
    assert set(rows) == set(np.flatnonzero(res.liquidatable))
    assert np.all(last["restored"].to_numpy() | (left[rows] == 0))
    # every order closed part of a held position (checked order by order in applied())
    assert np.all(np.abs(after.positions.toarray()) <= np.abs(book.positions.toarray()))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 5), st.sampled_from([-2.0, -1.0, 1.0, 2.0])), min_size=1),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 2),
)
def test_top_contributor_tie_breaks_match_a_sort(
    rows: list[list[tuple[int, float]]], worst: int
) -> None:
    """Most negative contribution, then larger notional, then lower instrument number."""
    from margin.liquidation import _top_contributors

    risk = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 0.5], [-1.0, -1.0, 0.0]])[np.arange(6) % 3]
    notional = np.array([1.0, 2.0, 1.0, 2.0, 1.0, 1.0])
    dense = np.zeros((len(rows), 6))
    for r, entries in enumerate(rows):
        for i, q in entries:
            dense[r, i] = q
    dense[np.abs(dense).sum(axis=1) == 0, 0] = 1.0  # every row holds something
    positions = sp.csr_matrix(dense)
    worst_of_row = np.full(len(rows), worst)
    got = _top_contributors(positions, worst_of_row, risk, notional)
    for r in range(len(rows)):
        lo, hi = positions.indptr[r], positions.indptr[r + 1]
        inst, q = positions.indices[lo:hi], positions.data[lo:hi]
        order = np.lexsort((inst, -np.abs(q) * notional[inst], q * risk[inst, worst]))
        assert got[r] == lo + order[0]
