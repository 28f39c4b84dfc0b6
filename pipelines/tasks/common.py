"""Shared pieces of the tasks: retry policy, digests, the parameter store name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from prefect.tasks import exponential_backoff

PARAMS_STORE = "params"
"""Folder under the output root holding the signed, versioned parameter store."""

IO_RETRIES = 2
"""Retries of tasks that read or write files (a busy or network file system can fail)."""
IO_BACKOFF = exponential_backoff(backoff_factor=2)


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's index and values (stable across processes)."""
    hashed = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


def package_digest(package: str) -> str:
    """SHA-256 over a package's source files, so cached results die with code changes."""
    import importlib

    module = importlib.import_module(package)
    root = Path(module.__file__ or "").parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """A frame as CSV bytes with a fixed float format and line ending (same data, same bytes)."""
    return frame.to_csv(index=False, float_format="%.10g", lineterminator="\n").encode()
