"""Fill a data directory from a local mirror folder, incrementally and safely.

Each recognised file (see :mod:`features.layout`) is copied only when the destination is
missing or differs (size or SHA-256). A copy goes to a hidden ``.partial`` file next to its
destination, is validated there, and only then atomically replaces the destination, so an
interrupted or failed sync never leaves a truncated or invalid file behind, and running it
again resumes where it stopped. Validated files also warm the Arrow cache.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from features import cache
from features.errors import MissingDataError
from features.layout import discover
from features.validation import load_validated

log = logging.getLogger(__name__)

#: Provenance notes copied along with the data when the mirror has them.
NOTES = ("SOURCES.md",)
PARTIAL_PREFIX = "."
PARTIAL_SUFFIX = ".partial"


@dataclass
class SyncResult:
    """What a sync did, by file name relative to the data directory."""

    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Number of data files now in sync."""
        return len(self.copied) + len(self.unchanged)


def project_root() -> Path:
    """The project checkout this package runs from."""
    return Path(__file__).resolve().parents[1]


def default_mirror(cwd: Path | None = None) -> Path | None:
    """``../shared/data`` relative to the working directory or the project root, if present."""
    here = Path.cwd() if cwd is None else Path(cwd)
    for base in (here, project_root()):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    return None


def _partial(path: Path) -> Path:
    return path.with_name(f"{PARTIAL_PREFIX}{path.name}{PARTIAL_SUFFIX}")


def _same(src: Path, dst: Path) -> bool:
    if not dst.is_file() or src.stat().st_size != dst.stat().st_size:
        return False
    return cache.file_digest(src) == cache.file_digest(dst)


def sync_from_mirror(
    mirror: str | Path, data_dir: str | Path, symbols: Iterable[str] | None = None
) -> SyncResult:
    """Copy the mirror's data files into ``data_dir`` (validated, atomic, incremental).

    Parameters
    ----------
    mirror:
        Folder laid out like a data directory (for example ``../shared/data``).
    data_dir:
        Destination data directory (created if needed).
    symbols:
        Base assets to copy (``None``: all).

    Raises
    ------
    MissingDataError
        The mirror does not exist or holds no recognised data file.
    DataValidationError
        A mirror file breaks a validation rule; the destination copy is left untouched.
    """
    source = Path(mirror)
    target = Path(data_dir)
    if not source.is_dir():
        raise MissingDataError(f"mirror folder not found: {source}")
    files = discover(source, None if symbols is None else list(symbols))
    if not files:
        raise MissingDataError(f"no market-data files found in mirror folder {source}")
    result = SyncResult()
    for item in files:
        relative = item.path.relative_to(source)
        name = relative.as_posix()
        dst = target / relative
        if _same(item.path, dst):
            result.unchanged.append(name)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = _partial(dst)
        try:
            shutil.copyfile(item.path, tmp)
            frame = load_validated(tmp, item.spec, name)
            os.replace(tmp, dst)
        finally:
            if tmp.exists():
                tmp.unlink()
        cache.store(target, dst, frame, cache.file_digest(dst))
        result.copied.append(name)
        log.info("%s: copied, %d rows valid", name, len(frame))
    for note in NOTES:
        if (source / note).is_file() and not _same(source / note, target / note):
            tmp = _partial(target / note)
            shutil.copyfile(source / note, tmp)
            os.replace(tmp, target / note)
    log.info(
        "sync from %s: %d files copied, %d already up to date",
        source,
        len(result.copied),
        len(result.unchanged),
    )
    return result
