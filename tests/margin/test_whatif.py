"""What-if margin equals a full recomputation of the book with the trade applied."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.bench_engine import benchmark_methodology, synthetic_book
from margin.book import Book
from margin.engine import compute_margin, prepare
from margin.whatif import WhatIf

BOOK = synthetic_book(500, seed=21)
METHOD = benchmark_methodology()
CTX = prepare(BOOK, METHOD, scan_precision="float64")
WHATIF = WhatIf(BOOK, METHOD, context=CTX)


def _with_trade(book: Book, row: int, inst: np.ndarray, qty: np.ndarray) -> Book:
    trade = sp.csr_matrix((qty, (np.full(inst.size, row), inst)), shape=book.positions.shape)
    positions = sp.csr_matrix(book.positions + trade)
    positions.eliminate_zeros()
    positions.sort_indices()
    return Book(
        book.instruments, book.accounts, positions, book.assets, book.collateral, book.market
    )


@settings(max_examples=30, deadline=None)
@given(
    row=st.integers(0, BOOK.n_accounts - 1),
    inst=st.lists(st.integers(0, len(BOOK.instruments) - 1), min_size=0, max_size=3, unique=True),
    qty=st.lists(st.integers(-5, 5).filter(bool), min_size=3, max_size=3),
)
def test_whatif_equals_recomputation(row: int, inst: list[int], qty: list[int]) -> None:
    idx = np.array(inst, dtype=np.intp)
    q = np.array(qty[: len(inst)], dtype=float)
    got = WHATIF.margin_after(row, idx, q)
    ref = compute_margin(_with_trade(BOOK, row, idx, q), METHOD, context=CTX).take(np.array([row]))
    assert got.im == pytest.approx(ref.im[0], abs=0.011)
    assert got.mm == pytest.approx(ref.mm[0], abs=0.011)
    assert got.equity == pytest.approx(ref.equity[0], abs=0.011)
    assert got.liquidatable == bool(ref.liquidatable[0]) or abs(got.equity - got.mm) < 0.02


def test_whatif_by_account_name_and_no_trade() -> None:
    res = compute_margin(BOOK, METHOD, context=CTX)
    got = WHATIF.margin_after(BOOK.accounts[7])
    assert got.im == pytest.approx(res.im[7], abs=0.011)
    assert got.worst_scenario == res.worst_scenario[7]


def test_whatif_is_fast() -> None:
    lat = []
    for i in range(300):
        t0 = time.perf_counter()
        WHATIF.margin_after(i % BOOK.n_accounts, np.array([1, 40]), np.array([0.5, -1.0]))
        lat.append(time.perf_counter() - t0)
    # the benchmark reports the median on an idle machine (< 100 us); allow shared CPUs here
    assert np.median(lat) < 1e-3
