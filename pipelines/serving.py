"""``xmargin serve``: the scheduled ``update-parameters`` deployment on a local Prefect server.

Prefect's temporary (ephemeral) API cannot schedule runs, so serving needs a real server.
When ``PREFECT_API_URL`` is not set, a local ``prefect server start`` is launched as a child
process (its database lives in the project's ``PREFECT_HOME``), awaited until healthy, used
for the deployment, and stopped when serving ends (Ctrl-C).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.config import CONFIG_FILENAME, XmarginConfig

DEPLOYMENT_NAME = "daily"
SERVER_STARTUP_SECONDS = 120.0


def wait_until_healthy(url: str, timeout: float = SERVER_STARTUP_SECONDS) -> None:
    """Poll ``<url>/health`` until it answers 200; raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"the Prefect server at {url} did not become healthy in {timeout:.0f} s")


@contextmanager
def local_server(port: int) -> Iterator[str]:
    """Run ``prefect server start`` on 127.0.0.1:``port`` and yield its API URL."""
    command = [
        sys.executable, "-m", "prefect", "server", "start",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}/api"
    try:
        print(f"Starting a local Prefect server on http://127.0.0.1:{port} ...", flush=True)
        wait_until_healthy(url)
        print(f"Prefect UI: http://127.0.0.1:{port}", flush=True)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def serve_deployment(cfg: XmarginConfig, cron: str, port: int) -> None:
    """Serve ``update-parameters`` on ``cron`` (UTC) until interrupted.

    The deployment's parameters name the configuration file, so every scheduled run reads
    the current ``xmargin.toml``.
    """
    config_file = cfg.base_dir / CONFIG_FILENAME
    parameters = {"config_file": str(config_file) if config_file.is_file() else None}
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        _serve(existing, cron, parameters)
        return
    with local_server(port) as url:
        _serve(url, cron, parameters)


def _serve(url: str, cron: str, parameters: dict[str, str | None]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.flows import update_parameters

    with temporary_settings(updates={PREFECT_API_URL: url}):
        update_parameters.serve(
            name=DEPLOYMENT_NAME,
            cron=cron,
            parameters=parameters,
            description="Daily margin parameters: forecasts, champion, files, report.",
            tags=["xmargin"],
        )
