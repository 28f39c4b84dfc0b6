"""The run configuration: one TOML file (``xmargin.toml``) validated by pydantic.

Only :mod:`pipelines` reads the configuration; everything below it takes explicit
arguments. Relative paths in the file are resolved against the folder holding the file,
so a run behaves the same from any working directory. Unknown sections or keys are
rejected, and every error is one line naming the file, the section, the key and the value::

    xmargin.toml: [models] refit_every: must be a positive integer (got -3)
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from margin.apc import ApcConfig
from margin.calibration import CalibrationConfig

CONFIG_FILENAME = "xmargin.toml"

KNOWN_SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "DOGE", "BNB")
KNOWN_MODELS = ("ewma", "ewma_asym", "garch", "gjr", "egarch", "har", "harq", "lgbm", "combo")

PositiveInt = Annotated[int, Field(gt=0)]


class ConfigError(ValueError):
    """A configuration file has a wrong key or value (one line, names the key)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where market history comes from and which part of it a run uses."""

    dir: Path = Path("data")
    symbols: tuple[str, ...] = ("BTC", "ETH", "SOL", "XRP", "DOGE", "BNB")
    history_start: dt.date = dt.date(2021, 1, 1)
    sync: bool = False

    @field_validator("symbols")
    @classmethod
    def _known_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(s.upper() for s in value)
        unknown = [s for s in upper if s not in KNOWN_SYMBOLS]
        if unknown:
            raise ValueError(f"unknown symbol {unknown[0]} (known: {', '.join(KNOWN_SYMBOLS)})")
        if not upper:
            raise ValueError("needs at least one symbol")
        if len(set(upper)) != len(upper):
            raise ValueError("lists a symbol twice")
        return upper


class ModelsConfig(_Section):
    """Forecasters to fit and the walk-forward evaluation that picks the champion."""

    names: tuple[str, ...] = ("ewma", "garch", "har", "lgbm")
    eval_days: PositiveInt = 60
    validation_days: PositiveInt = 120
    refit_every: PositiveInt = 30
    window: Literal["expanding", "rolling"] = "expanding"
    rolling_days: PositiveInt = 730
    seed: int = 7

    @field_validator("names")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        lower = tuple(s.lower() for s in value)
        unknown = [s for s in lower if s not in KNOWN_MODELS]
        if unknown:
            raise ValueError(f"unknown model {unknown[0]} (known: {', '.join(KNOWN_MODELS)})")
        if not lower:
            raise ValueError("needs at least one model")
        return lower


class BacktestConfig(_Section):
    """Walk-forward parameter backtest of the champion over the most recent days."""

    days: PositiveInt = 365
    refit_every: PositiveInt = 91
    validation_days: Annotated[int, Field(ge=30)] = 30


class ParamsConfig(_Section):
    """Parameter files: where they land and how they are signed."""

    out_dir: Path = Path("out")
    private_key: Path | None = None


class RunConfig(_Section):
    """Process-level settings of a run: tracking store, Prefect home, output."""

    mlflow_tracking_uri: str | None = None
    prefect_home: Path = Path(".prefect")
    progress: bool = True
    max_workers: PositiveInt = 2
    cache: bool = True
    """Reuse walk-forward results cached for the same data, schedule and code."""


class DaskConfig(_Section):
    """Scale-out: a scheduler address switches the flows to a Dask task runner."""

    address: str | None = None
    shards: PositiveInt = 4


class XmarginConfig(_Section):
    """The whole run configuration, one field per TOML section."""

    data: DataConfig = DataConfig()
    models: ModelsConfig = ModelsConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    apc: ApcConfig = ApcConfig()
    backtest: BacktestConfig = BacktestConfig()
    params: ParamsConfig = ParamsConfig()
    run: RunConfig = RunConfig()
    dask: DaskConfig = DaskConfig()
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    """Folder that relative paths are resolved against (the config file's folder)."""

    def resolve(self, path: Path) -> Path:
        """Return ``path`` made absolute against :attr:`base_dir`."""
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def data_dir(self) -> Path:
        """Absolute market-history folder."""
        return self.resolve(self.data.dir)

    @property
    def out_dir(self) -> Path:
        """Absolute output root; a run writes into ``out_dir/<as-of>/``."""
        return self.resolve(self.params.out_dir)

    @property
    def prefect_home(self) -> Path:
        """Absolute ``PREFECT_HOME`` for this project."""
        return self.resolve(self.run.prefect_home)

    @property
    def mlflow_tracking_uri(self) -> str:
        """The MLflow store: ``[run] mlflow_tracking_uri``, else ``MLFLOW_TRACKING_URI``,
        else ``sqlite:///<base_dir>/mlruns/mlflow.db`` (artifacts in ``mlruns/artifacts``)."""
        if self.run.mlflow_tracking_uri:
            return self.run.mlflow_tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{(self.base_dir / 'mlruns' / 'mlflow.db').resolve()}"

    def with_overrides(self, **sections: dict[str, Any]) -> XmarginConfig:
        """Return a copy with some keys of some sections replaced (validated again).

        ``cfg.with_overrides(data={"symbols": ["BTC"]})`` — ``None`` values are ignored,
        which lets CLI options pass through unset.
        """
        raw = self.model_dump(exclude_defaults=False)
        for section, updates in sections.items():
            raw[section].update({k: v for k, v in updates.items() if v is not None})
        return _validate(raw, self.base_dir, "command line")


def _describe(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "greater_than" and ctx.get("gt") == 0:
        is_int = isinstance(error.get("input"), int)
        return "must be a positive integer" if is_int else "must be positive"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    msg: str = error["msg"]
    return msg[0].lower() + msg[1:]


def _format_error(source: str, exc: ValidationError, model: type[BaseModel]) -> str:
    error = exc.errors(include_url=False)[0]
    loc = [str(p) for p in error["loc"]]
    if not loc:
        return f"{source}: {_describe(error)}"
    section, *rest = loc
    if section not in model.model_fields:
        known = ", ".join(f"[{s}]" for s in model.model_fields if s != "base_dir")
        return f"{source}: [{section}]: unknown section (known: {known})"
    field = rest[0] if rest else ""
    sub = model.model_fields[section].annotation
    what = _describe(error)
    if what == "unknown key" and isinstance(sub, type) and issubclass(sub, BaseModel):
        what = f"unknown key (known: {', '.join(sub.model_fields)})"
    where = f"[{section}] {field}".rstrip()
    got = "" if error["type"] in ("extra_forbidden", "missing") else f" (got {error['input']!r})"
    return f"{source}: {where}: {what}{got}"


def _validate(raw: dict[str, Any], base_dir: Path, source: str) -> XmarginConfig:
    payload = {**raw, "base_dir": base_dir}
    try:
        return XmarginConfig.model_validate(payload)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc, XmarginConfig)) from None


def load_config(path: Path | str | None = None) -> XmarginConfig:
    """Load and validate the run configuration.

    Parameters
    ----------
    path
        A TOML file. ``None`` reads ``xmargin.toml`` in the current folder when it exists
        and otherwise uses the documented defaults (identical to the committed file).

    Raises
    ------
    ConfigError
        One line naming the file, section, key and offending value.
    FileNotFoundError
        When an explicit ``path`` does not exist.
    """
    if path is None:
        candidate = Path.cwd() / CONFIG_FILENAME
        if not candidate.is_file():
            return XmarginConfig(base_dir=Path.cwd())
        path = candidate
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid TOML ({exc})") from None
    if "base_dir" in raw:
        raise ConfigError(f"{path.name}: [base_dir]: unknown section")
    return _validate(raw, path.resolve().parent, path.name)
