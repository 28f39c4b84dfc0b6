"""Mirror sync (incremental, atomic, resumable) and the Arrow cache (invalidation)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from features import DataValidationError, load_market_history
from features import cache as cache_mod
from features import sync as sync_mod
from features.cache import cache_path
from features.summary import check_data_dir
from features.sync import default_mirror, sync_from_mirror

FILES = (
    "binance_spot_1h/BTCUSDT_1h.csv.gz",
    "binance_spot_1h/ETHUSDT_1h.csv.gz",
    "binance_usdm_perp_1h/BTCUSDT_perp_1h.csv.gz",
    "binance_usdm_funding_8h/BTCUSDT_funding_8h.csv.gz",
    "deribit_dvol_1d/BTC_DVOL_1d.csv.gz",
)


def head_copy(src: Path, dst: Path, rows: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(src, "rt") as inp:
        lines = [line for _, line in zip(range(rows + 1), inp, strict=False)]
    with gzip.open(dst, "wt") as out:
        out.writelines(lines)


@pytest.fixture
def mirror(shared_data_dir: Path, tmp_path: Path) -> Path:
    """A small mirror: the first 600 rows of a few real files."""
    root = tmp_path / "mirror"
    for name in FILES:
        head_copy(shared_data_dir / name, root / name, 600)
    (root / "SOURCES.md").write_text("provenance\n")
    return root


def test_sync_copies_then_is_incremental(mirror: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = sync_from_mirror(mirror, data)
    assert sorted(first.copied) == sorted(FILES)
    for name in FILES:
        assert (data / name).read_bytes() == (mirror / name).read_bytes()
        assert cache_path(data, data / name).is_file()  # sync warms the cache
    assert (data / "SOURCES.md").read_text() == "provenance\n"
    second = sync_from_mirror(mirror, data)
    assert second.copied == [] and sorted(second.unchanged) == sorted(FILES)
    # A changed mirror file is copied again; the others are left alone.
    head_copy(mirror / FILES[0], mirror / FILES[0], 300)
    third = sync_from_mirror(mirror, data)
    assert third.copied == [FILES[0]]
    assert (data / FILES[0]).read_bytes() == (mirror / FILES[0]).read_bytes()


def test_sync_symbols_filter(mirror: Path, tmp_path: Path) -> None:
    result = sync_from_mirror(mirror, tmp_path / "data", ["eth"])
    assert result.copied == ["binance_spot_1h/ETHUSDT_1h.csv.gz"]


def test_interrupted_sync_resumes_without_damage(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    real = sync_mod.load_validated
    calls = {"n": 0}

    def crash_on_third(*args: object, **kwargs: object) -> pd.DataFrame:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sync_mod, "load_validated", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        sync_from_mirror(mirror, data)
    monkeypatch.setattr(sync_mod, "load_validated", real)
    assert not list(data.rglob("*.partial"))  # no half-written file is left behind
    done = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.csv.gz"))
    assert len(done) == 2
    resumed = sync_from_mirror(mirror, data)
    assert sorted(resumed.unchanged) == done
    assert len(resumed.copied) == len(FILES) - 2


def test_bad_mirror_file_leaves_destination_untouched(mirror: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    sync_from_mirror(mirror, data)
    good = (data / FILES[0]).read_bytes()
    with gzip.open(mirror / FILES[0], "rt") as handle:
        lines = handle.read().splitlines()
    lines[10] = lines[10].replace("T09:00:00Z", "T08:00:00Z")  # duplicate of the row before
    with gzip.open(mirror / FILES[0], "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=r"BTCUSDT_1h.csv.gz: row 10 \(line 11\)"):
        sync_from_mirror(mirror, data)
    assert (data / FILES[0]).read_bytes() == good
    assert not list(data.rglob("*.partial"))


def test_cache_is_used_and_invalidated_when_the_source_changes(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    sync_from_mirror(mirror, data)
    before = load_market_history(data, ["BTC"])

    def no_parse(*args: object, **kwargs: object) -> pd.DataFrame:
        raise AssertionError("cache miss: the CSV was parsed again")

    monkeypatch.setattr(cache_mod, "load_validated", no_parse)
    cached = load_market_history(data, ["BTC"])
    pd.testing.assert_frame_equal(cached.spot["BTC"], before.spot["BTC"])
    # A changed source (here: one digit) invalidates its entry: the digest no longer matches.
    path = data / FILES[0]
    with gzip.open(path, "rt") as handle:
        text = handle.read()
    changed = text.replace("13529.01", "13529.02", 1)
    with gzip.open(path, "wt") as handle:
        handle.write(changed)
    monkeypatch.setattr(cache_mod, "load_validated", sync_mod.load_validated)
    after = load_market_history(data, ["BTC"])
    assert after.spot["BTC"]["close"].iloc[0] == 13529.02


def test_check_data_dir_counts(mirror: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    sync_from_mirror(mirror, data)
    (data / "binance_spot_1h" / "notes.txt").write_text("x")
    check = check_data_dir(data)
    assert check.symbols == ["BTC", "ETH"]
    assert check.ignored == ["binance_spot_1h/notes.txt"]
    spot = check.files.set_index(["kind", "symbol"]).loc[("spot", "BTC")]
    assert spot["rows"] == 600
    span_hours = (spot["last"] - spot["first"]) / pd.Timedelta(hours=1) + 1
    assert spot["missing_bars"] == span_hours - 600 == 1  # one real outage hour in Jan 2018


def test_default_mirror(tmp_path: Path) -> None:
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "proj").mkdir()
    assert default_mirror(tmp_path / "proj") == (tmp_path / "shared" / "data").resolve()


def test_read_only_mirror_gets_no_cache(mirror: Path) -> None:
    # The shared mirror is published read-only; even a process that could write (root) must
    # leave it exactly as it is.
    mirror.chmod(0o555)
    try:
        history = load_market_history(mirror, symbols=["BTC"])
        assert not history.spot["BTC"].empty
        assert not (mirror / cache_mod.CACHE_DIR).exists()
    finally:
        mirror.chmod(0o755)
