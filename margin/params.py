"""Parameter files: canonical export, atomic versioned writes, signatures and verification.

A published set is a folder ``<root>/versions/<version>/`` holding ``params.json`` (validated by
``docs/params.schema.json``), ``params.csv`` (one flat row per underlying) and ``manifest.json``
(SHA-256 of both files and an Ed25519 signature over the manifest body). ``<root>/latest`` is a
symlink to the newest version and moves last; earlier versions are never touched.

Output is byte-identical for the same inputs: canonical JSON (sorted keys, floats rounded to
12 significant digits, no wall-clock time unless passed in) and a fixed CSV layout.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from margin import keys
from margin.parameters import SCHEMA_VERSION, ParameterChange, ParameterSet, RiskParameters

PARAMS_JSON = "params.json"
PARAMS_CSV = "params.csv"
MANIFEST_JSON = "manifest.json"
LATEST = "latest"
VERSIONS = "versions"
SIGNATURE_ALGORITHM = "Ed25519"
FLOAT_DIGITS = 12

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "params.schema.json"


class ParameterFileError(ValueError):
    """A parameter file failed verification; the message names the first failure."""


# --------------------------------------------------------------------------- canonical form


def _round_floats(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterFileError(f"non-finite number {value} cannot be exported")
        rounded = float(format(value, f".{FLOAT_DIGITS}g"))
        return 0.0 if rounded == 0 else rounded
    if isinstance(value, Mapping):
        return {str(k): _round_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round_floats(v) for v in value]
    return value


def canonical_json(value: Any) -> bytes:
    """Canonical UTF-8 JSON: sorted keys, 2-space indent, rounded floats, trailing newline."""
    text = json.dumps(
        _round_floats(value), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False
    )
    return (text + "\n").encode("utf-8")


def parameter_set_json(params: ParameterSet) -> bytes:
    """The ``params.json`` bytes of a parameter set."""
    return canonical_json(params.model_dump(mode="json"))


def generate_schema() -> bytes:
    """The JSON Schema of ``params.json``, generated from :class:`ParameterSet`."""
    schema = ParameterSet.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://xmargin.dev/params.schema.{SCHEMA_VERSION}.json"
    return canonical_json(schema)


def load_schema() -> dict[str, Any]:
    """The committed schema (``docs/params.schema.json``), or the generated one if absent."""
    if SCHEMA_PATH.is_file():
        return dict(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    return dict(json.loads(generate_schema()))


# --------------------------------------------------------------------------- flat CSV

CSV_COLUMNS: tuple[str, ...] = (
    "underlying",
    "as_of",
    "horizon_days",
    "im_confidence",
    "mm_confidence",
    "model",
    "sigma",
    "scan_im_long",
    "scan_im_short",
    "scan_mm_long",
    "scan_mm_short",
    "vol_shock_up",
    "vol_shock_down",
    "vol_power_short_dte",
    "vol_power_long_dte",
    "vol_dte_floor_days",
    "min_shocked_vol",
    "vol_shock_source",
    "tail_moves",
    "tail_weights",
    "perp_imf",
    "perp_mmf",
    "perp_size_addon",
    "haircut_im",
    "haircut_mm",
    "haircut_horizon_days",
    "apc_buffer",
    "apc_stress_weight",
    "apc_floor",
    "apc_bounds_bit",
    "fallback_source",
    "fallback_reason",
)


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(_round_floats(value))
    return "" if value is None else str(value)


def _csv_row(p: RiskParameters) -> list[str]:
    values: list[object] = [
        p.underlying,
        p.as_of.isoformat(),
        p.horizon_days,
        p.im_confidence,
        p.mm_confidence,
        p.model,
        p.sigma,
        p.scan_im.long,
        p.scan_im.short,
        p.scan_mm.long,
        p.scan_mm.short,
        p.vol_shock.up,
        p.vol_shock.down,
        p.vol_shock.power_short_dte,
        p.vol_shock.power_long_dte,
        p.vol_shock.dte_floor_days,
        p.vol_shock.min_shocked_vol,
        p.vol_shock.source,
        ";".join(_fmt(t.move) for t in p.tails),
        ";".join(_fmt(t.weight) for t in p.tails),
        p.perp.imf,
        p.perp.mmf,
        p.perp.size_addon,
        p.haircut.im,
        p.haircut.mm,
        p.haircut.horizon_days,
        p.apc.buffer,
        p.apc.stress_weight,
        p.apc.floor,
        ";".join(f"{b.rule}:{b.field}" for b in p.apc.bounds_bit),
        p.fallback.source,
        p.fallback.reason,
    ]
    return [_fmt(v) for v in values]


def parameter_set_csv(params: ParameterSet) -> bytes:
    """The ``params.csv`` bytes: one row per underlying, sorted by underlying."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for name in sorted(params.underlyings):
        writer.writerow(_csv_row(params.underlyings[name]))
    return buf.getvalue().encode("utf-8")


# --------------------------------------------------------------------------- changes

_TRACKED_FIELDS: tuple[tuple[str, ...], ...] = (
    ("sigma",),
    ("scan_im", "long"),
    ("scan_im", "short"),
    ("scan_mm", "long"),
    ("scan_mm", "short"),
    ("vol_shock", "up"),
    ("vol_shock", "down"),
    ("perp", "imf"),
    ("perp", "mmf"),
    ("haircut", "im"),
    ("haircut", "mm"),
)


def _get(obj: object, path: tuple[str, ...]) -> float:
    for part in path:
        obj = getattr(obj, part)
    return float(obj)  # type: ignore[arg-type]


def changes_against(current: ParameterSet, previous: ParameterSet | None) -> list[ParameterChange]:
    """Numeric changes per underlying and field against the previous set (new names skipped)."""
    if previous is None:
        return []
    out = []
    for name in sorted(current.underlyings):
        if name not in previous.underlyings:
            continue
        cur, prev = current.underlyings[name], previous.underlyings[name]
        for path in _TRACKED_FIELDS:
            a, b = _get(prev, path), _get(cur, path)
            out.append(
                ParameterChange(
                    underlying=name,
                    field=".".join(path),
                    previous=a,
                    current=b,
                    relative_change=b / a - 1.0,
                )
            )
    return out


# --------------------------------------------------------------------------- manifest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_body(files: Mapping[str, bytes], params: ParameterSet) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "as_of": params.as_of.isoformat(),
        "effective_from": params.effective_from.isoformat(),
        "files": {
            name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in files.items()
        },
    }


def build_manifest(
    files: Mapping[str, bytes], params: ParameterSet, signing_key: Ed25519PrivateKey | None
) -> bytes:
    """Manifest bytes: checksums plus, when a key is given, an Ed25519 signature.

    The signature covers the canonical JSON of the manifest without its ``signature`` field.
    """
    body = _manifest_body(files, params)
    if signing_key is not None:
        public = signing_key.public_key()
        signature = signing_key.sign(canonical_json(body))
        body["signature"] = {
            "algorithm": SIGNATURE_ALGORITHM,
            "public_key": keys.public_raw_b64(public),
            "public_key_sha256": keys.fingerprint(public),
            "value": base64.b64encode(signature).decode("ascii"),
        }
    return canonical_json(body)


# --------------------------------------------------------------------------- atomic writes


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _point_latest(root: Path, version: str) -> None:
    link = root / LATEST
    tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(Path(VERSIONS) / version, tmp)
    try:
        os.replace(tmp, link)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(root)


@dataclass(frozen=True)
class WrittenSet:
    """Where a parameter set landed."""

    version: str
    folder: Path
    files: Mapping[str, str]  # name -> sha256


def version_name(params: ParameterSet, params_json: bytes) -> str:
    """Deterministic version folder name: as-of date and a content digest."""
    return f"{params.as_of.isoformat()}_{_sha256(params_json)[:12]}"


def render(params: ParameterSet, signing_key: Ed25519PrivateKey | None = None) -> dict[str, bytes]:
    """The three files of a set as bytes (nothing is written)."""
    files = {PARAMS_JSON: parameter_set_json(params), PARAMS_CSV: parameter_set_csv(params)}
    manifest = build_manifest(files, params, signing_key)
    return {**files, MANIFEST_JSON: manifest}


def write_parameter_set(
    params: ParameterSet, root: Path, signing_key: Ed25519PrivateKey | None = None
) -> WrittenSet:
    """Publish a set under ``root`` atomically and move ``latest`` to it last.

    The files go to a hidden staging folder (each written with fsync), the folder is renamed
    into ``versions/`` in one step, then the ``latest`` symlink is replaced. A crash at any point
    leaves the previous ``latest`` and every earlier version intact. Re-publishing identical
    content is a no-op apart from moving ``latest``.
    """
    files = render(params, signing_key)
    version = version_name(params, files[PARAMS_JSON])
    versions = root / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    folder = versions / version
    if not folder.exists():
        staging = versions / f".staging-{version}-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        try:
            for name in (PARAMS_JSON, PARAMS_CSV, MANIFEST_JSON):
                atomic_write_bytes(staging / name, files[name])
            _fsync_dir(staging)
            try:
                os.rename(staging, folder)
            except OSError:
                # Another writer published the same content first: keep theirs.
                if not (folder / PARAMS_JSON).is_file():
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        _fsync_dir(versions)
    _point_latest(root, version)
    return WrittenSet(
        version=version,
        folder=folder,
        files={name: _sha256(data) for name, data in files.items()},
    )


def latest_folder(root: Path) -> Path | None:
    """The folder ``latest`` points at, or ``None`` if nothing was published."""
    link = root / LATEST
    return link.resolve() if link.exists() else None


# --------------------------------------------------------------------------- verify and load


def _resolve(path: Path) -> tuple[Path, Path]:
    """(params.json, manifest.json) for a file, a version folder, or a root with ``latest``."""
    if path.is_dir():
        folder = path / LATEST if (path / LATEST).exists() else path
        return folder / PARAMS_JSON, folder / MANIFEST_JSON
    if path.name == MANIFEST_JSON:
        return path.with_name(PARAMS_JSON), path
    return path, path.with_name(MANIFEST_JSON)


def _read_json(path: Path) -> tuple[bytes, Any]:
    if not path.is_file():
        raise ParameterFileError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return data, json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParameterFileError(f"{path}: not valid JSON ({exc})") from None


def _check_signature(
    manifest_path: Path, manifest: Mapping[str, Any], public_key: Ed25519PublicKey | None
) -> None:
    sig = manifest.get("signature")
    if sig is None:
        if public_key is not None:
            raise ParameterFileError(f"{manifest_path}: signature missing")
        return
    if not isinstance(sig, Mapping) or sig.get("algorithm") != SIGNATURE_ALGORITHM:
        raise ParameterFileError(f"{manifest_path}: signature is not {SIGNATURE_ALGORITHM}")
    embedded = keys.public_key_from_b64(str(sig.get("public_key", "")))
    if public_key is not None and keys.fingerprint(public_key) != keys.fingerprint(embedded):
        raise ParameterFileError(f"{manifest_path}: signed by a different key than the one given")
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        value = base64.b64decode(str(sig.get("value", "")), validate=True)
        (public_key or embedded).verify(value, canonical_json(body))
    except (InvalidSignature, ValueError):
        raise ParameterFileError(f"{manifest_path}: signature does not match") from None


def _check_checksums(folder: Path, manifest_path: Path, manifest: Mapping[str, Any]) -> None:
    listed = manifest.get("files")
    if not isinstance(listed, Mapping) or PARAMS_JSON not in listed:
        raise ParameterFileError(f"{manifest_path}: no checksum for {PARAMS_JSON}")
    for name in sorted(listed):
        target = folder / name
        if not target.is_file():
            raise ParameterFileError(f"{target}: file listed in the manifest is missing")
        entry = listed[name]
        expected = entry.get("sha256") if isinstance(entry, Mapping) else None
        if _sha256(target.read_bytes()) != expected:
            raise ParameterFileError(f"{target}: SHA-256 does not match the manifest")


def verify(path: Path, public_key: Ed25519PublicKey | None = None) -> ParameterSet:
    """Check a published set and return it; raise naming the first failure.

    Order: manifest readable → signature (against ``public_key`` when given, else the key
    embedded in the manifest, which proves integrity but not origin) → checksums of every
    listed file → ``params.json`` against the JSON Schema → parameter bounds (the pydantic
    model: finite, positive, MM ≤ IM, …).
    """
    params_path, manifest_path = _resolve(Path(path))
    _, manifest = _read_json(manifest_path)
    if not isinstance(manifest, Mapping):
        raise ParameterFileError(f"{manifest_path}: manifest is not a JSON object")
    _check_signature(manifest_path, manifest, public_key)
    _check_checksums(params_path.parent, manifest_path, manifest)
    _, document = _read_json(params_path)
    try:
        jsonschema.validate(document, load_schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ParameterFileError(
            f"{params_path}: schema violation at {where}: {exc.message}"
        ) from None
    return _validated(params_path, document)


_verify = verify


def _validated(params_path: Path, document: Any) -> ParameterSet:
    try:
        return ParameterSet.model_validate(document)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "/".join(str(p) for p in err["loc"]) or "(root)"
        raise ParameterFileError(
            f"{params_path}: parameter out of bounds at {where}: {err['msg']}"
        ) from None


def load(
    path: Path, verify: bool = True, public_key: Ed25519PublicKey | None = None
) -> ParameterSet:
    """Load a parameter set (file, version folder, or root with ``latest``).

    With ``verify=True`` (what the engine uses) a tampered, unsigned-when-a-key-is-given or
    out-of-bounds file is refused with :class:`ParameterFileError`; without it, the file is still
    validated by the pydantic model.
    """
    if verify:
        return _verify(path, public_key)
    params_path, _ = _resolve(Path(path))
    _, document = _read_json(params_path)
    return _validated(params_path, document)


def iter_versions(root: Path) -> Iterator[Path]:
    """Published version folders under ``root``, oldest name first (staging folders skipped)."""
    versions = root / VERSIONS
    if versions.is_dir():
        yield from sorted(
            p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".")
        )


def utc_midnight_after(day: dt.date) -> dt.datetime:
    """Default effective-from time: 00:00 UTC of the day after the as-of date."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
