"""Run independent chunk computations on a few threads.

NumPy and SciPy's sparse products release the GIL, so a thread pool over blocks of accounts
uses both cores of a small machine without copying the book into worker processes. Each chunk
writes its own rows of preallocated outputs, so results never depend on the thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["run_chunks"]

Chunk = TypeVar("Chunk")


def run_chunks(work: Callable[[Chunk], None], chunks: Sequence[Chunk], n_threads: int) -> None:
    """Call ``work`` on every chunk, on up to ``n_threads`` threads.

    Parameters
    ----------
    work : callable
        Computes one chunk and writes its results in place (rows no other chunk touches).
    chunks : sequence
        Chunk descriptors (slices or row-index arrays).
    n_threads : int
        Worker threads; 1 runs the chunks in order on the calling thread.

    Raises
    ------
    ValueError
        If ``n_threads`` is below 1.
    Exception
        The first exception raised by ``work`` is re-raised.
    """
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if n_threads == 1 or len(chunks) < 2:
        for chunk in chunks:
            work(chunk)
        return
    with ThreadPoolExecutor(max_workers=min(n_threads, len(chunks))) as pool:
        list(pool.map(work, chunks))
