"""Read one data file and check it against its rules, failing with a one-line message.

Every message has the form::

    binance_spot_1h/BTCUSDT_1h.csv.gz: row 12 (line 13), column 'high': high is below low (...)

where *row* is the 1-based data row (the header is not counted) and *line* the line number in
the decompressed file. Nothing is repaired here: a file either passes unchanged or raises
:class:`~features.errors.DataValidationError`. The cleaning policy (what is dropped, kept as a
gap, or only flagged) lives in :mod:`features.cleaning` and ``docs/data.md``.
"""

from __future__ import annotations

import difflib
import gzip
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from features.errors import DataValidationError, MissingDataError
from features.layout import FUNDING, OPTIONS, SourceSpec

#: Largest plausible |funding rate| per 8 h funding interval (decimal). Binance's caps have
#: been at most 3 % (0.03) per interval; anything beyond 5 % is a unit or parsing error.
FUNDING_BOUND = 0.05

#: Largest plausible DVOL (percent, annualised).
DVOL_BOUND = 1000.0

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _fail(name: str, row: int | None, column: str | None, rule: str) -> DataValidationError:
    where = name
    if row is not None:
        where += f": row {row} (line {row + 1})"
    if column is not None:
        where += f", column '{column}'" if row is not None else f": column '{column}'"
    return DataValidationError(f"{where}: {rule}")


def read_header(path: Path, name: str) -> list[str]:
    """Return the header row of a gzip CSV, raising a one-line error when unreadable."""
    if not path.is_file():
        raise MissingDataError(f"{name}: file not found ({path})")
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            line = handle.readline()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise _fail(name, None, None, f"not a readable gzip CSV file ({exc})") from exc
    header = [c.strip() for c in line.rstrip("\r\n").split(",")]
    if header == [""]:
        raise _fail(name, None, None, "file is empty (no header row)")
    return header


def check_columns(header: list[str], spec: SourceSpec, name: str) -> None:
    """Fail on a missing required column, suggesting a close match when it looks misspelt."""
    for column in spec.columns:
        if column in header:
            continue
        near = difflib.get_close_matches(column, header, n=1, cutoff=0.6)
        hint = f"; found '{near[0]}', did you mean '{column}'?" if near else ""
        raise _fail(name, None, column, f"required column is missing{hint}")
    seen: set[str] = set()
    for column in header:
        if column in seen:
            raise _fail(name, None, column, "column appears twice in the header")
        seen.add(column)


def _gzip_stream(path: Path) -> pa.NativeFile:
    """Decompressing input stream (data files are gzip whatever their temporary name)."""
    return pa.input_stream(str(path), compression="gzip")


def _arrow_types(spec: SourceSpec) -> dict[str, pa.DataType]:
    if spec.kind == OPTIONS.kind:
        return {}
    types: dict[str, pa.DataType] = {"timestamp": pa.timestamp("s", tz="UTC")}
    for column in spec.columns:
        if column != "timestamp":
            types[column] = pa.float64()
    return types


def _arrow_parses_timestamp(value: str) -> bool:
    try:
        pa.array([value]).cast(pa.timestamp("s", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _locate_bad_line(path: Path, name: str) -> DataValidationError | None:
    """First line whose number of fields differs from the header's (structural CSV error)."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
        width = len(handle.readline().split(","))
        for line_no, line in enumerate(handle, start=2):
            fields = len(line.rstrip("\r\n").split(","))
            if line.strip() and fields != width:
                return _fail(
                    name, line_no - 1, None, f"has {fields} fields, the header has {width}"
                )
    return None


def _locate_parse_error(
    path: Path, spec: SourceSpec, name: str, error: Exception
) -> DataValidationError:
    """Re-read a file as text to find the first cell the fast reader could not convert."""
    try:
        table = pacsv.read_csv(
            _gzip_stream(path),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(spec.columns, pa.string()),
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, OSError):
        located = _locate_bad_line(path, name)
        return located or _fail(name, None, None, f"could not be parsed as CSV ({error})")
    frame = table.to_pandas()
    for column in spec.columns:
        text = frame[column].astype(str).str.strip()
        if column == "timestamp":
            strict = pd.to_datetime(text, format=TIMESTAMP_FORMAT, errors="coerce", utc=True)
            for row in np.flatnonzero(strict.isna().to_numpy()).tolist():
                if not _arrow_parses_timestamp(text.iloc[row]):
                    return _fail(
                        name,
                        row + 1,
                        column,
                        f"unparseable timestamp {text.iloc[row]!r} (expected ISO-8601 UTC, "
                        "YYYY-MM-DDTHH:MM:SSZ)",
                    )
        else:
            numbers = pd.to_numeric(text, errors="coerce")
            bad = (numbers.isna() & (text != "") & (text.str.lower() != "nan")).to_numpy()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                return _fail(name, row + 1, column, f"not a number: {text.iloc[row]!r}")
    return _fail(name, None, None, f"could not be parsed as CSV ({error})")


def read_table(path: Path, spec: SourceSpec, name: str | None = None) -> pd.DataFrame:
    """Read a gzip CSV of kind ``spec`` with typed columns (no validation of values).

    Time series get a tz-aware UTC ``timestamp`` column (``datetime64[ns, UTC]``) and float
    columns; option snapshots are read as published.
    """
    name = name or path.name
    header = read_header(path, name)
    check_columns(header, spec, name)
    try:
        table = pacsv.read_csv(
            _gzip_stream(path),
            convert_options=pacsv.ConvertOptions(column_types=_arrow_types(spec)),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        if spec.kind == OPTIONS.kind:
            raise _fail(name, None, None, f"could not be parsed as CSV ({exc})") from exc
        raise _locate_parse_error(path, spec, name, exc) from exc
    frame = table.to_pandas()
    if "timestamp" in frame.columns:
        frame["timestamp"] = frame["timestamp"].astype("datetime64[ns, UTC]")
    return frame


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def validate_frame(frame: pd.DataFrame, spec: SourceSpec, name: str) -> None:
    """Check a freshly read frame against every rule of its kind.

    Rules (each failure names the first offending row, the column and the rule):
    unparseable/missing timestamps, timestamps off the bar grid, duplicate or unsorted
    timestamps, non-finite or non-positive prices, ``high < low``, ``open``/``close`` outside
    ``[low, high]``, non-finite or negative volume, and ``|funding_rate| > FUNDING_BOUND``.

    Raises
    ------
    DataValidationError
        On the first broken rule.
    """
    if spec.kind == OPTIONS.kind:
        _validate_options(frame, name)
        return
    if frame.empty:
        raise _fail(name, None, None, "file has a header but no data rows")
    ts = frame["timestamp"]
    row = _first(ts.isna().to_numpy())
    if row is not None:
        raise _fail(name, row + 1, "timestamp", "missing timestamp")
    values = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    if spec.interval is not None:
        step = pd.Timedelta(spec.interval).value
        row = _first(values % step != 0)
        if row is not None:
            raise _fail(
                name,
                row + 1,
                "timestamp",
                f"timestamp {ts.iloc[row]:%Y-%m-%dT%H:%M:%SZ} is not on the {spec.interval} grid",
            )
    diffs = np.diff(values)
    row = _first(diffs == 0)
    if row is not None:
        raise _fail(
            name,
            row + 2,
            "timestamp",
            f"duplicate timestamp {ts.iloc[row + 1]:%Y-%m-%dT%H:%M:%SZ} (also at row {row + 1})",
        )
    row = _first(diffs < 0)
    if row is not None:
        raise _fail(
            name,
            row + 2,
            "timestamp",
            f"timestamps not sorted ascending ({ts.iloc[row + 1]:%Y-%m-%dT%H:%M:%SZ} "
            f"after {ts.iloc[row]:%Y-%m-%dT%H:%M:%SZ})",
        )
    for column in spec.price_columns:
        x = frame[column].to_numpy(dtype=float)
        row = _first(~np.isfinite(x))
        if row is not None:
            raise _fail(name, row + 1, column, f"price is not a finite number ({x[row]})")
        row = _first(x <= 0)
        if row is not None:
            raise _fail(name, row + 1, column, f"price is not positive ({x[row]})")
    if spec.is_ohlc:
        _validate_ohlc(frame, name)
    if "volume" in spec.columns:
        v = frame["volume"].to_numpy(dtype=float)
        row = _first(~np.isfinite(v))
        if row is not None:
            raise _fail(name, row + 1, "volume", f"volume is not a finite number ({v[row]})")
        row = _first(v < 0)
        if row is not None:
            raise _fail(name, row + 1, "volume", f"volume is negative ({v[row]})")
    if spec.kind == FUNDING.kind:
        f = frame["funding_rate"].to_numpy(dtype=float)
        row = _first(~np.isfinite(f))
        if row is not None:
            raise _fail(name, row + 1, "funding_rate", f"funding rate is not finite ({f[row]})")
        row = _first(np.abs(f) > FUNDING_BOUND)
        if row is not None:
            raise _fail(
                name,
                row + 1,
                "funding_rate",
                f"|funding rate| {f[row]} exceeds the sane bound {FUNDING_BOUND} per 8 h "
                "(decimal, not percent)",
            )
    if spec.kind == "dvol":
        c = frame["close"].to_numpy(dtype=float)
        row = _first(c > DVOL_BOUND)
        if row is not None:
            raise _fail(name, row + 1, "close", f"DVOL {c[row]} exceeds {DVOL_BOUND} percent")


def _validate_ohlc(frame: pd.DataFrame, name: str) -> None:
    o, h, lo, c = (frame[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    row = _first(h < lo)
    if row is not None:
        raise _fail(name, row + 1, "high", f"high {h[row]} is below low {lo[row]}")
    row = _first((c < lo) | (c > h))
    if row is not None:
        raise _fail(
            name, row + 1, "close", f"close {c[row]} is outside [low, high] = [{lo[row]}, {h[row]}]"
        )
    row = _first((o < lo) | (o > h))
    if row is not None:
        raise _fail(
            name, row + 1, "open", f"open {o[row]} is outside [low, high] = [{lo[row]}, {h[row]}]"
        )


def _validate_options(frame: pd.DataFrame, name: str) -> None:
    if frame.empty:
        raise _fail(name, None, None, "file has a header but no data rows")
    for column in ("underlying_price", "strike_price"):
        x = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        row = _first(~np.isfinite(x) | (x <= 0))
        if row is not None:
            raise _fail(name, row + 1, column, f"price is not a positive number ({x[row]})")
    mark = pd.to_numeric(frame["mark_price"], errors="coerce").to_numpy(dtype=float)
    row = _first(~np.isfinite(mark) | (mark < 0))
    if row is not None:
        raise _fail(name, row + 1, "mark_price", f"mark price is not >= 0 ({mark[row]})")
    kinds = frame["option_type"].astype(str).to_numpy()
    row = _first(~np.isin(kinds, ["C", "P"]))
    if row is not None:
        raise _fail(name, row + 1, "option_type", f"option type {kinds[row]!r} is not C or P")
    row = _first(frame["instrument_name"].duplicated().to_numpy())
    if row is not None:
        raise _fail(name, row + 1, "instrument_name", "duplicate instrument in one snapshot")


def load_validated(path: Path, spec: SourceSpec, name: str | None = None) -> pd.DataFrame:
    """Read and validate one file; return it unchanged (``timestamp`` still a column)."""
    name = name or path.name
    frame = read_table(path, spec, name)
    validate_frame(frame, spec, name)
    return frame
