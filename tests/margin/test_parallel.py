"""Chunk runner: every chunk runs once, errors surface, bad thread counts are refused."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from margin.parallel import run_chunks


@pytest.mark.parametrize("n_threads", [1, 2, 4])
def test_every_chunk_writes_its_own_rows(n_threads: int) -> None:
    out = np.zeros(100)
    chunks = [slice(lo, lo + 7) for lo in range(0, 100, 7)]

    def work(rows: slice) -> None:
        out[rows] += np.arange(100)[rows] + 1

    run_chunks(work, chunks, n_threads)
    np.testing.assert_array_equal(out, np.arange(100) + 1)


def test_two_threads_are_used_for_several_chunks() -> None:
    seen: set[int] = set()
    barrier = threading.Barrier(2, timeout=10)

    def work(_: int) -> None:
        seen.add(threading.get_ident())
        barrier.wait()  # only returns once two chunks run at the same time

    run_chunks(work, [0, 1], n_threads=2)
    assert len(seen) == 2


def test_the_first_error_is_raised() -> None:
    def work(i: int) -> None:
        if i == 3:
            raise ArithmeticError("chunk 3 failed")

    with pytest.raises(ArithmeticError, match="chunk 3"):
        run_chunks(work, list(range(6)), n_threads=2)


def test_thread_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="n_threads must be at least 1"):
        run_chunks(lambda _: None, [0], n_threads=0)
