"""The run configuration: documented defaults, one-line errors naming the key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.config import ConfigError, XmarginConfig, load_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xmargin.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_committed_file_equals_the_built_in_defaults() -> None:
    committed = load_config(PROJECT_ROOT / "xmargin.toml")
    assert committed == XmarginConfig(base_dir=PROJECT_ROOT)


def test_missing_file_without_explicit_path_uses_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config()
    assert cfg.base_dir == tmp_path
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_the_file_folder(tmp_path: Path) -> None:
    path = _write(tmp_path, '[data]\ndir = "market"\n[params]\nout_dir = "results"\n')
    cfg = load_config(path)
    assert cfg.data_dir == tmp_path / "market"
    assert cfg.out_dir == tmp_path / "results"
    assert cfg.prefect_home == tmp_path / ".prefect"


def test_values_are_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[data]\nsymbols = ["btc", "eth"]\nhistory_start = 2023-06-01\n'
        '[models]\nnames = ["HAR"]\nrefit_every = 5\n[apc]\nfloor = true\n',
    )
    cfg = load_config(path)
    assert cfg.data.symbols == ("BTC", "ETH")
    assert cfg.data.history_start == dt.date(2023, 6, 1)
    assert cfg.models.names == ("har",)
    assert cfg.models.refit_every == 5
    assert cfg.apc.floor is True and cfg.apc.buffer is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[models]\nrefit_every = -3\n",
            "xmargin.toml: [models] refit_every: must be a positive integer (got -3)",
        ),
        ("[models]\nrefit_evry = 3\n", "xmargin.toml: [models] refit_evry: unknown key"),
        ("[modls]\nx = 1\n", "xmargin.toml: [modls]: unknown section"),
        ('[data]\nsymbols = ["BTC", "FOO"]\n', "xmargin.toml: [data] symbols: unknown symbol FOO"),
        ('[models]\nnames = ["prophet"]\n', "xmargin.toml: [models] names: unknown model prophet"),
        ("[calibration]\nim_confidence = 1.5\n", "xmargin.toml: [calibration] im_confidence:"),
        ('[models]\nwindow = "sliding"\n', "xmargin.toml: [models] window:"),
        ("[apc]\nbuffer_rate = 0.1\n", "xmargin.toml: [apc] buffer_rate:"),
        ("[data\n", "xmargin.toml: not valid TOML"),
    ],
)
def test_errors_are_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    text_of_error = str(info.value)
    assert text_of_error.startswith(message)
    assert "\n" not in text_of_error


def test_overrides_validate_and_skip_none(tmp_path: Path) -> None:
    cfg = XmarginConfig(base_dir=tmp_path)
    changed = cfg.with_overrides(data={"symbols": ["sol"], "dir": None})
    assert changed.data.symbols == ("SOL",)
    assert changed.data.dir == cfg.data.dir
    assert changed.base_dir == tmp_path
    with pytest.raises(ConfigError, match=r"\[data\] symbols: unknown symbol ZZZ"):
        cfg.with_overrides(data={"symbols": ["ZZZ"]})
