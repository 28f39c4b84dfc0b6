"""The run folder is switched in atomically; a failed run leaves the previous one intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import outputs
from pipelines.outputs import publish_run_folder


def test_publish_points_the_as_of_link_at_a_complete_folder(tmp_path: Path) -> None:
    link = publish_run_folder(tmp_path, "2024-06-30", {"a.txt": b"one", "b.txt": b"two"})
    assert link == tmp_path / "2024-06-30"
    assert link.is_symlink()
    assert (link / "a.txt").read_bytes() == b"one"
    assert (link / "b.txt").read_bytes() == b"two"


def test_a_second_run_replaces_the_link_and_keeps_a_few_old_runs(tmp_path: Path) -> None:
    for i in range(outputs.KEEP_RUNS + 2):
        publish_run_folder(tmp_path, "2024-06-30", {"a.txt": str(i).encode()})
    assert (tmp_path / "2024-06-30" / "a.txt").read_bytes() == str(outputs.KEEP_RUNS + 1).encode()
    runs = sorted(p.name for p in (tmp_path / outputs.RUNS).iterdir())
    assert len(runs) == outputs.KEEP_RUNS
    assert not any(name.startswith(".") for name in runs)


def test_a_crash_while_writing_leaves_the_previous_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_run_folder(tmp_path, "2024-06-30", {"a.txt": b"good"})

    def boom(*_: object, **__: object) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(outputs.os, "rename", boom)
    with pytest.raises(KeyboardInterrupt):
        publish_run_folder(tmp_path, "2024-06-30", {"a.txt": b"half"})
    assert (tmp_path / "2024-06-30" / "a.txt").read_bytes() == b"good"
    leftovers = [p for p in (tmp_path / outputs.RUNS).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_real_folder_in_the_way_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "2024-06-30").mkdir()
    with pytest.raises(FileExistsError, match="2024-06-30"):
        publish_run_folder(tmp_path, "2024-06-30", {"a.txt": b"x"})
