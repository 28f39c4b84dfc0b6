"""The scenario scan: exact worst scenarios, linear shortcuts and the linear column trick."""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchmarks.bench_engine import benchmark_methodology, synthetic_book
from margin.engine import _linear_worst, _with_linear_column, compute_margin, prepare
from margin.methodology import Methodology

# moves as a grid builds them: repeated values (vol up / same / down) and weighted tails
GRID = np.repeat(np.linspace(-0.16, 0.16, 9), 3)
TAILS = np.array([-0.66, -0.33, 0.5, 1.0, 2.0, 3.0]) * np.array(
    [0.18, 0.36, 0.24, 0.12, 0.06, 0.04]
)
MOVES = np.concatenate([GRID, TAILS])

coefficients = hnp.arrays(
    np.float64,
    st.integers(1, 40),
    elements=st.one_of(
        st.floats(-1e12, 1e12, allow_nan=False),
        st.sampled_from([0.0, -0.0, 1e-300, -1e-300, 1e250, -1e250, np.inf, -np.inf, np.nan]),
    ),
)


@settings(max_examples=200, deadline=None)
@given(lin=coefficients, moves=st.sampled_from([MOVES, GRID, -MOVES, np.zeros(5), MOVES[:1]]))
def test_linear_worst_is_the_first_argmin_of_the_rounded_products(
    lin: np.ndarray, moves: np.ndarray
) -> None:
    with np.errstate(invalid="ignore", over="ignore"):
        expected = np.argmin(lin[:, None] * moves[None, :], axis=1)
    np.testing.assert_array_equal(_linear_worst(lin, moves), expected)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), density=st.floats(0.0, 0.5))
def test_linear_column_adds_lin_times_move_exactly_as_a_separate_product(
    seed: int, density: float
) -> None:
    rng = np.random.default_rng(seed)
    n, cols, k = 60, 12, 7
    sub = sp.random(n, cols, density=density, format="csr", random_state=rng)
    sub.data = rng.normal(0.0, 50.0, sub.nnz)
    risk = rng.normal(0.0, 1e3, (cols, k))
    move = rng.normal(0.0, 0.1, k)
    lin = rng.normal(0.0, 1e4, n)
    held = np.diff(sub.indptr) > 0
    scanned = np.flatnonzero(held)
    rows = np.repeat(np.arange(n), np.diff(sub.indptr))
    augmented = _with_linear_column(sub, rows, held, scanned, lin, np.float64)
    got = augmented @ np.vstack([risk, move])
    expected = (sub @ risk + lin[:, None] * move[None, :])[scanned]
    np.testing.assert_array_equal(got, expected)


def test_default_scan_finds_every_accounts_exact_worst_scenario() -> None:
    book = synthetic_book(3_000, seed=17)
    m = benchmark_methodology()
    res = compute_margin(book, m, chunk_size=700)
    # independent dense reference: positions and collateral times full risk matrices
    ctx = prepare(book, m)
    risk = ctx.risk
    starts = np.concatenate([[0], np.cumsum([len(s) for s in risk.sets])])
    r_full = np.zeros((len(book.instruments), starts[-1]))
    a_full = np.zeros((len(book.assets), starts[-1]))
    for u, (cols, block, a_cols, a_block) in enumerate(
        zip(risk.inst_of, risk.risk_inst_scen, risk.asset_of, risk.risk_asset_scen, strict=True)
    ):
        r_full[cols, starts[u] : starts[u + 1]] = block
        a_full[a_cols, starts[u] : starts[u + 1]] = a_block
    pnl = book.positions @ r_full + book.collateral @ a_full
    lows = np.stack([pnl[:, a:b].min(axis=1) for a, b in itertools.pairwise(starts)], axis=1)
    args = np.stack([pnl[:, a:b].argmin(axis=1) + a for a, b in itertools.pairwise(starts)], 1)
    np.testing.assert_allclose(
        res.standalone_sum, np.maximum(-lows, 0.0).sum(axis=1), rtol=1e-12, atol=1e-9
    )
    worst = args[np.arange(book.n_accounts), lows.argmin(axis=1)]
    # the same scenario, or one whose P&L equals the worst to the last bits
    rows = np.arange(book.n_accounts)
    same = res.worst_scenario == worst
    np.testing.assert_allclose(
        pnl[rows, res.worst_scenario], pnl[rows, worst], rtol=1e-12, atol=1e-9
    )
    assert same.mean() > 0.99


def test_float32_option_stays_close_and_chunking_never_matters() -> None:
    book = synthetic_book(2_000, seed=9)
    m = Methodology(offsets={"mode": "none"})
    exact = compute_margin(book, m)
    fast = compute_margin(book, m, scan_precision="float32", chunk_size=333, n_threads=2)
    np.testing.assert_allclose(fast.standalone_sum, exact.standalone_sum, rtol=1e-5, atol=0.05)
    again = compute_margin(book, m, chunk_size=1, n_threads=1)
    for field in ("im", "mm", "equity", "worst_scenario", "isolated_im", "gamma"):
        np.testing.assert_array_equal(getattr(exact, field), getattr(again, field))
