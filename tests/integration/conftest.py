"""Fixtures for flows run end to end: a Prefect test server and a temporary MLflow store."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture()
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store in a temporary folder (never the project's store)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
