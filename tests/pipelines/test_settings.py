"""The Prefect/MLflow environment is set by the project, never required from a shell."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pipelines.settings import PREFECT_DEFAULTS, configure_environment

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_sets_what_is_missing_and_keeps_what_is_given(tmp_path: Path) -> None:
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    applied = configure_environment(tmp_path / ".prefect", "sqlite:///x.db", environ=env)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"  # the user's value wins
    assert "PREFECT_SERVER_ANALYTICS_ENABLED" not in applied
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "90"
    assert env["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] == "ignore"
    assert env["PREFECT_HOME"] == str((tmp_path / ".prefect").resolve())
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:///x.db"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert (tmp_path / ".prefect").is_dir()


def test_committed_prefect_toml_matches_the_code_defaults() -> None:
    settings = tomllib.loads((PROJECT_ROOT / "prefect.toml").read_text(encoding="utf-8"))
    assert settings["home"] == ".prefect"
    assert (
        str(settings["server"]["ephemeral"]["startup_timeout_seconds"])
        == PREFECT_DEFAULTS["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]
    )
    assert settings["server"]["analytics_enabled"] is False
    assert settings["logging"]["to_api"]["when_missing_flow"] == "ignore"


def test_prefect_reads_the_committed_file_from_the_project_root() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    code = (
        "from prefect.settings import get_current_settings as g; s = g(); "
        "print(s.server.ephemeral.startup_timeout_seconds, s.server.analytics_enabled, "
        "s.logging.to_api.when_missing_flow)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True,
        text=True, check=True, timeout=120,
    )  # fmt: skip
    assert out.stdout.split() == ["90", "False", "ignore"]
