"""The run folder ``out/<as-of>/``: written in full elsewhere, then switched in one step.

A run stages every output (parameter files, backtest summary, metrics, report) in a fresh
folder ``out/runs/<as-of>_<n>/``, then replaces the symlink ``out/<as-of>`` with one atomic
rename. A run killed at any point therefore leaves ``out/<as-of>`` pointing at the previous,
complete set; readers never see a half-written folder. The newest few run folders of each
as-of date are kept, older ones are pruned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

RUNS = "runs"
KEEP_RUNS = 3


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _next_run_folder(runs: Path, as_of: str) -> Path:
    numbers = [
        int(p.name.rsplit("_", 1)[1])
        for p in runs.glob(f"{as_of}_*")
        if p.name.rsplit("_", 1)[1].isdigit()
    ]
    return runs / f"{as_of}_{max(numbers, default=0) + 1:04d}"


def publish_run_folder(out_root: Path, as_of: str, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` into a new run folder and point ``out_root/as_of`` at it atomically.

    Parameters
    ----------
    out_root
        The output root (``out``).
    as_of
        The as-of date, ``YYYY-MM-DD``.
    files
        File name → content. Written with fsync before the switch.

    Returns
    -------
    Path
        ``out_root/as_of`` (a symlink to the new run folder).
    """
    runs = out_root / RUNS
    runs.mkdir(parents=True, exist_ok=True)
    folder = _next_run_folder(runs, as_of)
    staging = runs / f".staging-{folder.name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        for name, data in files.items():
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(staging)
        os.rename(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    _fsync_dir(runs)
    link = out_root / as_of
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a run link; move it away first")
    tmp = out_root / f".{as_of}.link-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(Path(RUNS) / folder.name, tmp)
    os.replace(tmp, link)
    _fsync_dir(out_root)
    _prune(runs, as_of, keep=folder)
    return link


def _prune(runs: Path, as_of: str, keep: Path) -> None:
    older = sorted(p for p in runs.glob(f"{as_of}_*") if p.is_dir() and p != keep)
    for stale in older[: max(0, len(older) - (KEEP_RUNS - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
