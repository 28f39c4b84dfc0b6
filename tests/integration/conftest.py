"""Fixtures for flows run end to end: a Prefect test server and a temporary MLflow store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary Prefect API server and ``PREFECT_HOME`` for the whole session.

    Yields the temporary Prefect home. Start-up takes 10-25 s on 2 cores, hence one per
    session and a 90 s timeout.
    """
    from prefect.settings import (
        PREFECT_HOME,
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    updates = {
        PREFECT_HOME: str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 90,
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore",
    }
    with temporary_settings(updates=updates), prefect_test_harness(server_startup_timeout=90):
        yield home


AS_OF = "2024-06-30"
SYMBOLS = ("BTC", "ETH")

CONFIG = """
[data]
dir = "{data}"
symbols = ["BTC", "ETH"]
history_start = 2022-06-01

[models]
names = ["ewma", "har"]
eval_days = 30
validation_days = 60
refit_every = 30

[backtest]
days = 60
refit_every = 60

[params]
out_dir = "{out}"
private_key = "{key}"

[run]
mlflow_tracking_uri = "{mlflow}"
progress = false
cache = {cache}
"""


@pytest.fixture(scope="session")
def data_dir(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BTC and ETH synced from the mirror into a temporary data folder (with its cache)."""
    from features.sync import sync_from_mirror

    target = tmp_path_factory.mktemp("data")
    sync_from_mirror(shared_data_dir, target, list(SYMBOLS))
    return target


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Ed25519 key for every run of the module (signatures are deterministic)."""
    from margin.keys import generate_keypair

    private, _ = generate_keypair(tmp_path_factory.mktemp("keys"))
    return private


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One temporary SQLite MLflow store for the module (never the project's)."""
    folder = tmp_path_factory.mktemp("mlflow")
    yield f"sqlite:///{folder / 'mlflow.db'}"


def _write_config(
    tmp: Path, data: Path, out: Path, mlflow: str, key: Path, cache: bool = True
) -> Path:
    path = tmp / "xmargin.toml"
    text = CONFIG.format(data=data, out=out, mlflow=mlflow, key=key, cache=str(cache).lower())
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def first_run(
    prefect_harness: Path,
    data_dir: Path,
    mlflow_store: str,
    signing_key: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, object]]:
    """One single-process run; returns the output root and the flow's result."""
    from pipelines.flows import update_parameters

    tmp = tmp_path_factory.mktemp("run")
    out = tmp / "out"
    result = update_parameters(
        config_file=str(_write_config(tmp, data_dir, out, mlflow_store, signing_key)), as_of=AS_OF
    )
    return out, result


@pytest.fixture(scope="session")
def make_config() -> Callable[..., Path]:
    """Write a run configuration for a short slice of the data (see ``CONFIG``)."""
    return _write_config
