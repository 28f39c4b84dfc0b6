"""The Prefect and MLflow environment the project needs, set in code so nobody exports it.

Prefect reads ``prefect.toml`` only from the current working directory, so the committed
``prefect.toml`` covers runs started at the project root, and :func:`configure_environment`
sets the same values as environment variables for runs started anywhere else. It must run
before ``prefect`` is imported (Prefect reads its settings at import time); values already in
the environment win, so a user or a test can still override any of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# Measured on 2-core machines: the ephemeral API server needs 11-23 s to start (more on a
# fresh PREFECT_HOME under load); the default 20 s timeout fails runs.
PREFECT_DEFAULTS: Mapping[str, str] = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    # No network on exchange risk hosts: telemetry only produces error lines.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Tasks called outside a flow (tests, `.fn()`) must not warn about missing flow runs.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}

MLFLOW_DEFAULTS: Mapping[str, str] = {
    # The UI's job runner spawns many processes and triples start-up time; we use no jobs.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def configure_environment(
    prefect_home: Path,
    mlflow_tracking_uri: str | None = None,
    *,
    environ: dict[str, str] | None = None,
) -> dict[str, str]:
    """Put the project's Prefect and MLflow settings into the process environment.

    Parameters
    ----------
    prefect_home
        Folder for Prefect's database, results and cache records (``<project>/.prefect``
        by default); it never leaks into the user's ``~/.prefect``.
    mlflow_tracking_uri
        The MLflow store (``sqlite:///<project>/mlflow.db`` by default; the file store is
        disabled in MLflow 3).
    environ
        The mapping to update (``os.environ`` by default, a dict in tests).

    Returns
    -------
    dict
        The values that were set (keys already present in ``environ`` are left alone).
    """
    env = os.environ if environ is None else environ
    wanted = dict(PREFECT_DEFAULTS)
    wanted["PREFECT_HOME"] = str(Path(prefect_home).resolve())
    wanted.update(MLFLOW_DEFAULTS)
    if mlflow_tracking_uri:
        wanted["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    applied: dict[str, str] = {}
    for key, value in wanted.items():
        if key not in env:
            env[key] = value
            applied[key] = value
    if "PREFECT_HOME" in applied:
        Path(prefect_home).mkdir(parents=True, exist_ok=True)
    return applied
