"""Validation: every rule fails with one line naming file, row, column and rule."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features import DataValidationError, MissingDataError, load_market_history
from features.layout import DVOL, FUNDING, MARK, OPTIONS, SPOT
from features.validation import load_validated

ROOT = Path(__file__).resolve().parents[2]


def real_lines(shared: Path, relative: str, n: int = 12) -> list[str]:
    """Header plus the first ``n`` data lines of a real file."""
    with gzip.open(shared / relative, "rt") as handle:
        return [next(handle).rstrip("\n") for _ in range(n + 1)]


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def set_cell(lines: list[str], line_no: int, column: str, value: str) -> list[str]:
    """Copy of ``lines`` with one cell replaced (``line_no`` counts the header as line 1)."""
    header = lines[0].split(",")
    out = list(lines)
    cells = out[line_no - 1].split(",")
    cells[header.index(column)] = value
    out[line_no - 1] = ",".join(cells)
    return out


SPOT_FILE = "binance_spot_1h/BTCUSDT_1h.csv.gz"


@pytest.mark.parametrize(
    ("line_no", "column", "value", "rule"),
    [
        (4, "timestamp", "2018-01-01 02:00", "unparseable timestamp"),
        (4, "timestamp", "2018-01-01T02:30:00Z", "not on the 1h grid"),
        (4, "timestamp", "2018-01-01T01:00:00Z", "duplicate timestamp"),
        (4, "timestamp", "2017-12-31T02:00:00Z", "not sorted ascending"),
        (5, "open", "0", "price is not positive"),
        (5, "close", "-13000", "price is not positive"),
        (5, "high", "nan", "price is not a finite number"),
        (5, "low", "inf", "price is not a finite number"),
        (5, "high", "1", "high 1.0 is below low"),
        (5, "close", "99999", "close 99999.0 is outside [low, high]"),
        (5, "open", "1", "open 1.0 is outside [low, high]"),
        (5, "volume", "-1", "volume is negative"),
        (5, "volume", "nan", "volume is not a finite number"),
        (5, "volume", "lots", "not a number: 'lots'"),
    ],
)
def test_each_rule_names_file_row_column(
    shared_data_dir: Path, tmp_path: Path, line_no: int, column: str, value: str, rule: str
) -> None:
    lines = set_cell(real_lines(shared_data_dir, SPOT_FILE), line_no, column, value)
    path = write(tmp_path / SPOT_FILE, lines)
    with pytest.raises(DataValidationError) as info:
        load_validated(path, SPOT, SPOT_FILE)
    message = str(info.value)
    assert message.startswith(f"{SPOT_FILE}: row {line_no - 1} (line {line_no}), ")
    assert f"column '{column}'" in message
    assert rule in message
    assert "\n" not in message


def test_funding_beyond_bound(shared_data_dir: Path, tmp_path: Path) -> None:
    name = "binance_usdm_funding_8h/BTCUSDT_funding_8h.csv.gz"
    for bad, rule in (("0.3", "exceeds the sane bound"), ("inf", "not finite")):
        lines = set_cell(real_lines(shared_data_dir, name), 3, "funding_rate", bad)
        with pytest.raises(DataValidationError, match=rf"row 2 \(line 3\).*{rule}"):
            load_validated(write(tmp_path / name, lines), FUNDING, name)
    # Real extremes (±0.003 per 8 h) are fine.
    ok = set_cell(real_lines(shared_data_dir, name), 3, "funding_rate", "-0.003")
    assert len(load_validated(write(tmp_path / name, ok), FUNDING, name)) == 12


def test_mark_and_dvol_rules(shared_data_dir: Path, tmp_path: Path) -> None:
    mark = "binance_usdm_mark_1h/BTCUSDT_mark_1h.csv.gz"
    lines = set_cell(real_lines(shared_data_dir, mark), 2, "low", "9999999")
    with pytest.raises(DataValidationError, match=r"row 1 \(line 2\), column 'high'.*below low"):
        load_validated(write(tmp_path / mark, lines), MARK, mark)
    dvol = "deribit_dvol_1d/BTC_DVOL_1d.csv.gz"
    lines = set_cell(real_lines(shared_data_dir, dvol), 4, "timestamp", "2021-03-26T05:00:00Z")
    with pytest.raises(DataValidationError, match="not on the 1D grid"):
        load_validated(write(tmp_path / dvol, lines), DVOL, dvol)


def test_missing_and_misspelt_columns(shared_data_dir: Path, tmp_path: Path) -> None:
    lines = real_lines(shared_data_dir, SPOT_FILE)
    misspelt = [lines[0].replace("volume", "volumne"), *lines[1:]]
    with pytest.raises(DataValidationError) as info:
        load_validated(write(tmp_path / SPOT_FILE, misspelt), SPOT, SPOT_FILE)
    assert "column 'volume': required column is missing" in str(info.value)
    assert "did you mean 'volume'" in str(info.value)
    dropped = [",".join(line.split(",")[:5]) for line in lines]
    with pytest.raises(DataValidationError, match=r"column 'volume': required column is missing$"):
        load_validated(write(tmp_path / SPOT_FILE, dropped), SPOT, SPOT_FILE)


def test_structural_csv_error_names_the_line(shared_data_dir: Path, tmp_path: Path) -> None:
    lines = real_lines(shared_data_dir, SPOT_FILE)
    lines[6] = lines[6].rsplit(",", 1)[0]  # a row with a missing field
    with pytest.raises(DataValidationError, match=r"row 6 \(line 7\): has 5 fields, the header"):
        load_validated(write(tmp_path / SPOT_FILE, lines), SPOT, SPOT_FILE)


def test_missing_file_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="file not found"):
        load_validated(tmp_path / SPOT_FILE, SPOT, SPOT_FILE)
    (tmp_path / "binance_spot_1h").mkdir()
    (tmp_path / SPOT_FILE).write_bytes(b"timestamp,open\n")  # not gzip
    with pytest.raises(DataValidationError, match="not a readable gzip CSV"):
        load_validated(tmp_path / SPOT_FILE, SPOT, SPOT_FILE)
    write(tmp_path / SPOT_FILE, ["timestamp,open,high,low,close,volume"])
    with pytest.raises(DataValidationError, match="no data rows"):
        load_validated(tmp_path / SPOT_FILE, SPOT, SPOT_FILE)
    with pytest.raises(MissingDataError, match="data directory not found"):
        load_market_history(tmp_path / "nowhere")
    with pytest.raises(MissingDataError, match="no spot history for symbol ETH"):
        load_market_history(tmp_path, ["ETH"])


def test_option_snapshot_rules(shared_data_dir: Path, tmp_path: Path) -> None:
    name = "deribit_options_snapshots/ETH_options_2024-01-08T1119Z.csv.gz"
    good = real_lines(shared_data_dir, name, 20)
    assert len(load_validated(write(tmp_path / name, good), OPTIONS, name)) == 20
    lines = set_cell(good, 3, "option_type", "X")
    with pytest.raises(DataValidationError, match=r"row 2 \(line 3\), column 'option_type'"):
        load_validated(write(tmp_path / name, lines), OPTIONS, name)
    lines = set_cell(good, 5, "underlying_price", "-1")
    with pytest.raises(DataValidationError, match=r"row 4 \(line 5\), column 'underlying_price'"):
        load_validated(write(tmp_path / name, lines), OPTIONS, name)


def test_every_real_file_is_valid(shared_data_dir: Path) -> None:
    history = load_market_history(shared_data_dir, use_cache=False)
    assert set(history.symbols) == {"BTC", "ETH", "SOL", "XRP", "DOGE", "BNB"}
    assert len(history.report) == 19  # 6 spot, 6 perp, 2 mark, 3 funding, 2 dvol series
    assert history.options["ETH"].shape == (684, 24)
    counts = history.report.set_index(["kind", "symbol"])
    # Rows that pass validation are only dropped by the launch-day rule, never silently.
    assert (
        counts.loc[("spot", "XRP"), "rows"] + counts.loc[("spot", "XRP"), "dropped_launch_day"]
        == 58320
    )
    assert counts.loc[("spot", "BTC"), "missing_bars"] == 122
    assert counts.loc[("perp", "BTC"), "zero_volume"] == 2  # 2019-09-09 00:00-01:00 placeholders


def test_cli_check_prints_one_line_and_exits_2(shared_data_dir: Path, tmp_path: Path) -> None:
    lines = set_cell(real_lines(shared_data_dir, SPOT_FILE, 30), 17, "high", "13000")
    write(tmp_path / SPOT_FILE, lines)
    env = {k: v for k, v in os.environ.items() if k != "XMARGIN_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "data", "check", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    err_lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1, done.stderr
    assert SPOT_FILE in err_lines[0]
    assert "row 16 (line 17)" in err_lines[0] and "column 'high'" in err_lines[0]
    assert "Traceback" not in done.stderr
