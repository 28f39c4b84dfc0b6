"""``xmargin data sync`` and ``xmargin data check`` in process, and load-time bounds."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features import load_market_history
from pipelines.cli import app

FILES = ("binance_spot_1h/SOLUSDT_1h.csv.gz", "binance_usdm_perp_1h/SOLUSDT_perp_1h.csv.gz")


@pytest.fixture
def mirror(shared_data_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    for name in FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(shared_data_dir / name, "rt") as inp:
            lines = [line for _, line in zip(range(24 * 40 + 1), inp, strict=False)]
        with gzip.open(root / name, "wt") as out:
            out.writelines(lines)
    return root


def test_sync_then_check(mirror: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    args = ["data", "sync", "--data-dir", str(data), "--from-dir", str(mirror)]
    first = runner.invoke(app, [*args, "--symbols", "sol"])
    assert first.exit_code == 0, first.output
    assert "2 copied, 0 already up to date" in first.output
    again = runner.invoke(app, args)
    assert "0 copied, 2 already up to date" in again.output
    check = runner.invoke(app, ["data", "check", "--data-dir", str(data)], env={"COLUMNS": "80"})
    assert check.exit_code == 0, check.output
    assert "2 files valid" in check.output and "symbols: SOL" in check.output
    assert "spot SOL" in check.output and "perp SOL" in check.output
    assert max(len(line) for line in check.output.splitlines()) <= 80  # fits one screen
    assert len(check.output.splitlines()) < 25


def test_check_missing_dir_is_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "check", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code != 0
    assert "data directory not found" in str(result.exception)


def test_load_bounds_are_inclusive_and_partial(mirror: Path) -> None:
    history = load_market_history(mirror, ["SOL"], start="2020-08-20", end="2020-08-25")
    spot = history.spot["SOL"]
    assert spot.index[0] == pd.Timestamp("2020-08-20 00:00", tz="UTC")
    assert spot.index[-1] == pd.Timestamp("2020-08-25 23:00", tz="UTC")
    stamped = load_market_history(
        mirror, ["SOL"], start=pd.Timestamp("2020-08-20 05:00"), end=pd.Timestamp("2020-08-21")
    )
    assert stamped.spot["SOL"].index[0] == pd.Timestamp("2020-08-20 05:00", tz="UTC")
    assert stamped.spot["SOL"].index[-1] == pd.Timestamp("2020-08-21 00:00", tz="UTC")
    # The listing day (first bar 06:00 on 2020-08-11) is dropped and counted.
    full = load_market_history(mirror, ["SOL"])
    assert full.spot["SOL"].index[0] == pd.Timestamp("2020-08-12", tz="UTC")
    row = full.report.set_index("kind").loc["spot"]
    assert row["dropped_launch_day"] == 18
    assert row["rows"] + row["dropped_launch_day"] == 24 * 40


def test_time_bounds_mixed_forms() -> None:
    import datetime as dt

    from features.history import slice_time

    frame = pd.DataFrame(
        {"a": range(48)}, index=pd.date_range("2024-01-01", periods=48, freq="1h", tz="UTC")
    )

    def span(start: object, end: object) -> list[str]:
        kept = slice_time(frame, start, end)  # type: ignore[arg-type]
        return [f"{t:%d %H}" for t in kept.index[[0, -1]]] if len(kept) else []

    assert span("2024-01-01T05:00:00Z", "2024-01-01") == ["01 05", "01 23"]
    assert span(dt.date(2024, 1, 2), dt.date(2024, 1, 2)) == ["02 00", "02 23"]
    assert span(pd.Timestamp("2024-01-01 03:00"), "2024-01-01T04:00:00Z") == ["01 03", "01 04"]
    assert span("2024-01-02T05:00:00+02:00", None) == ["02 03", "02 23"]
    assert span("2024", "2024") == ["01 00", "02 23"]
    assert span("2025", None) == [] and span("2024-01-02", "2023") == []
