"""Scale-out: pick the flows' task runner from the configuration and shard books by account.

Without a Dask address the flows use Prefect's thread pool (on a 2-core host, threads beat
processes for the short model fits). With ``[dask] address = "tcp://host:8786"`` every task
of a flow is submitted to that Dask cluster through ``prefect-dask``, and the engine's book is
split into account shards that are margined on the cluster and concatenated in account order,
so the result is identical to a single-process run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner


def task_runner(address: str | None, max_workers: int = 2) -> TaskRunner[Any]:
    """Return the task runner for a configured scheduler address.

    Parameters
    ----------
    address
        A Dask scheduler address (``tcp://host:8786``) or ``None`` for the local thread pool.
    max_workers
        Threads of the local pool (ignored with Dask).
    """
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max_workers)


def account_shards(n_accounts: int, n_shards: int) -> list[np.ndarray]:
    """Split account rows ``0 … n_accounts-1`` into at most ``n_shards`` contiguous blocks.

    Contiguous, ordered blocks make concatenating the per-shard results give back the
    whole-book order without a sort. Empty shards are dropped.
    """
    if n_shards < 1:
        raise ValueError(f"number of shards must be positive (got {n_shards})")
    blocks = np.array_split(
        np.arange(n_accounts, dtype=np.int64), min(n_shards, max(n_accounts, 1))
    )
    return [block for block in blocks if block.size]
