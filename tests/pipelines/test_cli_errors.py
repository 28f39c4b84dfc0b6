"""The CLI turns a user's mistake into one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipelines import cli


def test_bad_config_is_one_line_naming_section_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[models]\nrefit_every = -3\n")
    monkeypatch.setattr(sys, "argv", ["xmargin", "run", "--config", str(bad)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    # Square brackets survive (they are not swallowed as rich markup).
    assert "[models] refit_every" in err
    assert err.startswith("error: bad.toml")
