"""Task-runner choice and account shards."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.dask_runner import account_shards, task_runner


@given(st.integers(0, 500), st.integers(1, 40))
def test_shards_cover_every_account_once_in_order(n_accounts: int, n_shards: int) -> None:
    shards = account_shards(n_accounts, n_shards)
    joined = np.concatenate(shards) if shards else np.array([], dtype=np.int64)
    assert joined.tolist() == list(range(n_accounts))
    assert len(shards) <= n_shards
    assert all(s.size for s in shards)
    if shards:
        assert max(s.size for s in shards) - min(s.size for s in shards) <= 1


def test_zero_shards_is_an_error() -> None:
    with pytest.raises(ValueError, match="positive"):
        account_shards(10, 0)


def test_runner_follows_the_address() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    local = task_runner(None, max_workers=3)
    assert isinstance(local, ThreadPoolTaskRunner)
    remote = task_runner("tcp://127.0.0.1:8786")
    assert isinstance(remote, DaskTaskRunner)
    assert remote.address == "tcp://127.0.0.1:8786"
