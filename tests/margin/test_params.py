"""Parameter files: schema, canonical bytes, signatures, tamper detection and crash safety."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from margin import keys, params
from margin.parameters import (
    ApcState,
    BoundEvent,
    CorrelationMatrix,
    Haircut,
    Offsets,
    ParameterSet,
    PerpMargin,
    Provenance,
    RiskParameters,
    ScanRange,
    TailMove,
    VolShock,
)

AS_OF = dt.date(2024, 12, 31)
ROOT = Path(__file__).resolve().parents[2]


def underlying(symbol: str = "BTC", scale: float = 1.0, as_of: dt.date = AS_OF) -> RiskParameters:
    return RiskParameters(
        underlying=symbol,
        as_of=as_of,
        horizon_days=1,
        im_confidence=0.99,
        mm_confidence=0.975,
        sigma=0.03 * scale,
        model="har",
        scan_im=ScanRange(long=0.08 * scale, short=0.09 * scale),
        scan_mm=ScanRange(long=0.06 * scale, short=0.065 * scale),
        vol_shock=VolShock(up=0.3, down=0.2),
        tails=(TailMove(move=-0.66, weight=0.09 / 0.66), TailMove(move=1.0, weight=0.09)),
        perp=PerpMargin(imf=0.09 * scale, mmf=0.065 * scale, size_addon=1e-6),
        haircut=Haircut(im=0.11, mm=0.085, horizon_days=2),
        apc=ApcState(
            max_decrease=0.1,
            bounds_bit=(
                BoundEvent(rule="decrease_cap", field="scan_im.long", raw=0.07, bounded=0.08),
            ),
        ),
    )


def parameter_set(scale: float = 1.0, as_of: dt.date = AS_OF) -> ParameterSet:
    corr = CorrelationMatrix(symbols=("BTC", "ETH"), values=((1.0, 0.8), (0.8, 1.0)))
    return ParameterSet(
        as_of=as_of,
        effective_from=params.utc_midnight_after(as_of),
        horizon_days=1,
        im_confidence=0.99,
        mm_confidence=0.975,
        underlyings={
            "BTC": underlying("BTC", scale, as_of),
            "ETH": underlying("ETH", scale * 1.2, as_of),
        },
        offsets=Offsets(ewma=corr, stressed=corr),
        provenance=Provenance(model="har", data_digest="abc123", code_version="0.1.0"),
    )


def same(a: ParameterSet, b: ParameterSet) -> bool:
    """Equal up to the 12-significant-digit float format of the files."""
    return params.parameter_set_json(a) == params.parameter_set_json(b)


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return keys.generate_keypair(tmp_path_factory.mktemp("keys"))


def test_committed_schema_equals_generated() -> None:
    committed = (ROOT / "docs" / "params.schema.json").read_bytes()
    assert committed == params.generate_schema()


def test_params_json_validates_against_schema() -> None:
    document = json.loads(params.parameter_set_json(parameter_set()))
    jsonschema.validate(document, params.load_schema())
    assert document["schema_version"] == "1.0"
    assert document["underlyings"]["BTC"]["apc"]["bounds_bit"][0]["rule"] == "decrease_cap"


def test_output_is_byte_identical(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key = keys.load_private_key(keypair[0])
    a = params.write_parameter_set(parameter_set(), tmp_path / "a", key)
    b = params.write_parameter_set(parameter_set(), tmp_path / "b", key)
    assert a.version == b.version
    for name in (params.PARAMS_JSON, params.PARAMS_CSV, params.MANIFEST_JSON):
        assert (a.folder / name).read_bytes() == (b.folder / name).read_bytes()


def test_canonical_json_is_sorted_and_rounded() -> None:
    out = params.canonical_json({"b": 0.1 + 0.2, "a": [1.0, -0.0]})
    assert out == b'{\n  "a": [\n    1.0,\n    0.0\n  ],\n  "b": 0.3\n}\n'


def test_roundtrip_and_verify_with_key(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key = keys.load_private_key(keypair[0])
    written = params.write_parameter_set(parameter_set(), tmp_path, key)
    public = keys.load_public_key(keypair[1])
    loaded = params.load(tmp_path, verify=True, public_key=public)
    assert same(loaded, parameter_set())
    assert params.latest_folder(tmp_path) == written.folder.resolve()
    csv_lines = (written.folder / params.PARAMS_CSV).read_text().splitlines()
    assert csv_lines[0].split(",") == list(params.CSV_COLUMNS)
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["BTC", "ETH"]


@pytest.mark.parametrize("name", [params.PARAMS_JSON, params.PARAMS_CSV, params.MANIFEST_JSON])
def test_tampering_one_byte_fails(tmp_path: Path, keypair: tuple[Path, Path], name: str) -> None:
    key = keys.load_private_key(keypair[0])
    written = params.write_parameter_set(parameter_set(), tmp_path, key)
    target = written.folder / name
    data = bytearray(target.read_bytes())
    pos = data.index(b"0.08") + 3 if b"0.08" in data else len(data) // 2
    data[pos] = ord("9") if data[pos] != ord("9") else ord("7")
    target.write_bytes(bytes(data))
    with pytest.raises(params.ParameterFileError):
        params.load(written.folder, verify=True)


def test_wrong_public_key_is_named(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key = keys.load_private_key(keypair[0])
    params.write_parameter_set(parameter_set(), tmp_path / "set", key)
    _, other_public = keys.generate_keypair(tmp_path / "other")
    with pytest.raises(params.ParameterFileError, match="different key"):
        params.verify(tmp_path / "set", keys.load_public_key(other_public))


def test_unsigned_set_fails_when_a_key_is_required(
    tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    params.write_parameter_set(parameter_set(), tmp_path)
    params.verify(tmp_path)  # checksums alone are fine
    with pytest.raises(params.ParameterFileError, match="signature missing"):
        params.verify(tmp_path, keys.load_public_key(keypair[1]))


def test_resigned_out_of_bounds_file_is_refused(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    # A correctly signed file whose content breaks a bound (MM above IM) is still refused.
    key = keys.load_private_key(keypair[0])
    document = json.loads(params.parameter_set_json(parameter_set()))
    document["underlyings"]["BTC"]["scan_mm"]["long"] = 0.5
    body = params.canonical_json(document)
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / params.PARAMS_JSON).write_bytes(body)
    manifest = params.build_manifest({params.PARAMS_JSON: body}, parameter_set(), key)
    (folder / params.MANIFEST_JSON).write_bytes(manifest)
    with pytest.raises(params.ParameterFileError, match="out of bounds"):
        params.load(folder, verify=True, public_key=keys.load_public_key(keypair[1]))


def test_negative_value_fails_schema(tmp_path: Path) -> None:
    document = json.loads(params.parameter_set_json(parameter_set()))
    document["underlyings"]["ETH"]["perp"]["imf"] = -0.1
    body = params.canonical_json(document)
    (tmp_path / params.PARAMS_JSON).write_bytes(body)
    manifest = params.build_manifest({params.PARAMS_JSON: body}, parameter_set(), None)
    (tmp_path / params.MANIFEST_JSON).write_bytes(manifest)
    with pytest.raises(
        params.ParameterFileError, match="schema violation at underlyings/ETH/perp/imf"
    ):
        params.verify(tmp_path)


def test_earlier_versions_stay_and_changes_are_recorded(tmp_path: Path) -> None:
    first = parameter_set()
    w1 = params.write_parameter_set(first, tmp_path)
    second_raw = parameter_set(scale=1.1, as_of=AS_OF + dt.timedelta(days=1))
    second = second_raw.model_copy(
        update={
            "changes": tuple(params.changes_against(second_raw, first)),
            "previous_version": w1.version,
        }
    )
    w2 = params.write_parameter_set(second, tmp_path)
    assert [p.name for p in params.iter_versions(tmp_path)] == [w1.version, w2.version]
    params.verify(w1.folder)
    assert params.load(tmp_path).as_of == second.as_of
    change = next(c for c in second.changes if c.underlying == "BTC" and c.field == "scan_im.long")
    assert change.relative_change == pytest.approx(0.1)


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 5])
def test_crash_at_any_replace_keeps_previous_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    good = params.write_parameter_set(parameter_set(), tmp_path)
    real_replace, real_rename = os.replace, os.rename
    calls = {"n": 0}

    def crashing(op):  # type: ignore[no-untyped-def]
        def inner(src, dst):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise OSError("simulated crash")
            return op(src, dst)

        return inner

    monkeypatch.setattr(params.os, "replace", crashing(real_replace))
    monkeypatch.setattr(params.os, "rename", crashing(real_rename))
    try:
        params.write_parameter_set(parameter_set(scale=1.3), tmp_path)
    except OSError:
        loaded = params.load(tmp_path, verify=True)
        assert same(loaded, parameter_set())
        assert params.latest_folder(tmp_path) == good.folder.resolve()
    else:
        # The crash point lies past the last rename: the new set is complete and valid.
        assert same(params.load(tmp_path, verify=True), parameter_set(scale=1.3))
    params.verify(good.folder)


def test_sigkill_mid_write_keeps_previous_set(tmp_path: Path) -> None:
    params.write_parameter_set(parameter_set(), tmp_path)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from margin import params
        from test_params import parameter_set
        real = params.atomic_write_bytes
        count = {{"n": 0}}
        def dying(path, data):
            count["n"] += 1
            if count["n"] == 2:
                # Half of the second file is on disk, then the process dies.
                with open(path.with_name(path.name + ".partial"), "wb") as fh:
                    fh.write(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, data)
        params.atomic_write_bytes = dying
        root = __import__("pathlib").Path({str(tmp_path)!r})
        params.write_parameter_set(parameter_set(scale=1.5), root)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    assert same(params.load(tmp_path, verify=True), parameter_set())
    assert len(list(params.iter_versions(tmp_path))) == 1


def test_invalid_parameters_are_impossible() -> None:
    with pytest.raises(ValidationError):
        ScanRange(long=0.0, short=0.1)
    with pytest.raises(ValidationError):
        ScanRange(long=float("nan"), short=0.1)
    with pytest.raises(ValidationError):
        PerpMargin(imf=0.05, mmf=0.06, size_addon=1e-6)
    with pytest.raises(ValidationError, match="MM long scan range"):
        underlying().model_copy(update={}).model_validate(
            {**underlying().model_dump(), "scan_mm": {"long": 0.2, "short": 0.01}}
        )
    with pytest.raises(ValidationError, match="symmetric"):
        CorrelationMatrix(symbols=("A", "B"), values=((1.0, 0.5), (0.4, 1.0)))


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_scan_range_accepts_only_positive_finite(value: float) -> None:
    try:
        scan = ScanRange(long=value, short=value)
    except ValidationError:
        return
    assert 0 < scan.long < 1 and 0 < scan.short <= 10


def test_cli_keys_and_verify(tmp_path: Path) -> None:
    """``xmargin keys generate`` then ``xmargin verify``: OK, then one tampered byte fails."""

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )

    made = cli("keys", "generate", "--out", str(tmp_path / "keys"))
    assert made.returncode == 0, made.stderr
    private = tmp_path / "keys" / keys.PRIVATE_KEY_NAME
    public = tmp_path / "keys" / keys.PUBLIC_KEY_NAME
    written = params.write_parameter_set(
        parameter_set(), tmp_path / "out", keys.load_private_key(private)
    )
    ok = cli("verify", str(tmp_path / "out"), "--public-key", str(public))
    assert ok.returncode == 0, ok.stderr
    assert "OK: 2 underlyings" in ok.stdout
    target = written.folder / params.PARAMS_JSON
    data = bytearray(target.read_bytes())
    data[data.index(b'"BTC"') + 2] = ord("X")
    target.write_bytes(bytes(data))
    bad = cli("verify", str(target), "--public-key", str(public))
    assert bad.returncode == 2
    assert "SHA-256 does not match" in bad.stderr and "params.json" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 2  # one message, no traceback
