"""``xmargin data check``: validate every file of a data directory and summarise it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.cache import read_validated
from features.cleaning import clean_series
from features.errors import MissingDataError
from features.layout import SPECS, discover

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataCheck:
    """Result of checking a data directory.

    Attributes
    ----------
    files:
        One row per file: ``kind, symbol, file, rows, first, last`` and the cleaning counts
        (``dropped_launch_day, missing_bars, gap_runs, longest_gap, zero_volume, flat_bars,
        large_moves``). Option snapshots have ``rows`` and the snapshot time only.
    ignored:
        Files inside the known folders whose names match no layout pattern.
    """

    files: pd.DataFrame
    ignored: list[str] = field(default_factory=list)

    @property
    def symbols(self) -> list[str]:
        """Symbols with at least one file, sorted."""
        return sorted(self.files["symbol"].unique())


def check_data_dir(data_dir: str | Path, *, use_cache: bool = True) -> DataCheck:
    """Validate every recognised file in ``data_dir`` and count gaps and flags.

    Raises
    ------
    MissingDataError
        The directory does not exist or holds no data file.
    DataValidationError
        The first file that breaks a rule (message names file, row, column and rule).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise MissingDataError(f"data directory not found: {root} (run 'xmargin data sync')")
    files = discover(root)
    if not files:
        raise MissingDataError(f"no market-data files found in {root} (run 'xmargin data sync')")
    rows: list[dict[str, object]] = []
    for item in files:
        name = item.path.relative_to(root).as_posix()
        frame = read_validated(item.path, item.spec, name, root, use_cache)
        row: dict[str, object] = {"kind": item.spec.kind, "symbol": item.symbol, "file": name}
        if item.spec.interval is None:
            taken = pd.to_datetime(frame["creation_timestamp"], unit="ms", utc=True)
            row.update(rows=len(frame), first=taken.min(), last=taken.max())
        else:
            series = frame.set_index("timestamp")
            raw_first, raw_last = series.index[0], series.index[-1]
            _, counts = clean_series(series, item.spec.kind, item.spec.interval)
            row.update(first=raw_first, last=raw_last, **counts.as_dict())
            row["rows"] = len(series)
        rows.append(row)
    known = {spec.folder for spec in SPECS}
    matched = {f.path for f in files}
    ignored = sorted(
        p.relative_to(root).as_posix()
        for folder in known
        if (root / folder).is_dir()
        for p in (root / folder).iterdir()
        if p.is_file() and p not in matched and not p.name.startswith(".")
    )
    table = pd.DataFrame(rows)
    log.info("checked %d files in %s: all valid", len(table), root)
    return DataCheck(table, ignored)
