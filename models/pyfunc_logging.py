"""Log a fitted forecaster as an MLflow pyfunc model (models-from-code, explicit signature).

Each logged model holds

* the code file :mod:`models.pyfunc_model` (MLflow's models-from-code: no CloudPickle of
  a live object) and the project's ``models`` package (``code_paths``), so it loads from
  any directory;
* the artifact ``forecaster``: a standard-library pickle of the fitted estimator (its
  hyper-parameters and fitted attributes; classes from the logged ``models`` package);
* the artifact ``settings``: JSON ``{"model": name, "horizon": h}`` (not MLflow's model
  config, which would also be logged as run parameters and clash between horizons);
* an explicit :class:`mlflow.models.ModelSignature`: input columns ``symbol`` (string),
  ``date`` (datetime, UTC day, timezone-naive) and the panel columns the forecaster reads
  (double; optional where the forecaster treats a missing column as missing values),
  output ``symbol, date, horizon, variance, volatility``, parameter ``horizon``;
* explicit pinned ``pip_requirements`` (no inference). The development lock file is not
  copied (MLflow would copy ``uv.lock`` from whatever the working directory is, so the
  artifacts would depend on where the command ran): the pins are the model's environment.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from models.base import BaseForecaster

MODEL_CODE = Path(__file__).resolve().with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).resolve().parent
ARTIFACT = "forecaster"
SETTINGS = "settings"
#: Loggers whose lines about the environment are noise once requirements are explicit:
#: "Failed to resolve installed pip version" (the venv has no pip) and uv detection.
_ENVIRONMENT_LOGGERS = ("mlflow.utils.environment", "mlflow.utils.uv_utils")


def input_columns(forecaster: BaseForecaster) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Panel columns a fitted forecaster reads: ``(required, optional)``.

    A combination reads what its members read; LightGBM reads every feature column it
    finds and treats an absent one as missing values (optional columns).
    """
    from models.lgbm import LOG_COLUMNS, RAW_COLUMNS, LGBMForecaster

    members = getattr(forecaster, "members_", None)
    parts = (
        [input_columns(m) for m in members.values()]
        if members
        else [(tuple(forecaster.required_columns), ())]
    )
    required = tuple(dict.fromkeys(c for r, _ in parts for c in r))
    optional = [c for _, o in parts for c in o]
    if isinstance(forecaster, LGBMForecaster):
        optional += [*LOG_COLUMNS, "rq", *RAW_COLUMNS]
    return required, tuple(c for c in dict.fromkeys(optional) if c not in required)


def model_signature(forecaster: BaseForecaster, horizon: int) -> Any:
    """The explicit :class:`mlflow.models.ModelSignature` of a logged forecaster."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    required, optional = input_columns(forecaster)
    inputs = Schema(
        [
            ColSpec("string", "symbol"),
            ColSpec("datetime", "date"),
            *(ColSpec("double", c) for c in required),
            *(ColSpec("double", c, required=False) for c in optional),
        ]
    )
    outputs = Schema(
        [
            ColSpec("string", "symbol"),
            ColSpec("datetime", "date"),
            ColSpec("long", "horizon"),
            ColSpec("double", "variance"),
            ColSpec("double", "volatility"),
        ]
    )
    params = ParamSchema([ParamSpec("horizon", "long", int(horizon))])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


@contextmanager
def quiet_model_logging() -> Iterator[None]:
    """Around one ``log_model`` call: no uv lock-file copy, no environment chatter.

    Sets ``MLFLOW_UV_AUTO_DETECT=false``, raises the two environment loggers to ERROR and
    ignores MLflow's "no input example" hint, for the duration of the block only.
    """
    loggers = [logging.getLogger(name) for name in _ENVIRONMENT_LOGGERS]
    levels = [lg.level for lg in loggers]
    with (
        mock.patch.dict(os.environ, {"MLFLOW_UV_AUTO_DETECT": "false"}),
        warnings.catch_warnings(),
    ):
        # The signature is explicit; an input example would only make logging run predict.
        warnings.filterwarnings("ignore", ".*An input example was not provided", UserWarning)
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def log_forecaster(
    forecaster: BaseForecaster, horizons: Sequence[int], pins: list[str]
) -> dict[int, str]:
    """Log ``forecaster`` in the active run as ``model_h<h>`` for each horizon.

    Parameters
    ----------
    forecaster : BaseForecaster
        A fitted forecaster (pickled once, shared by the horizons' models).
    horizons : sequence of int
        One pyfunc model per horizon (days); each forecasts that horizon by default.
    pins : list of str
        Pinned pip requirements of the models.

    Returns
    -------
    dict
        ``horizon → model URI``.
    """
    import mlflow.pyfunc

    uris: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        artifact = folder / f"{ARTIFACT}.pkl"
        artifact.write_bytes(pickle.dumps(forecaster, protocol=5))
        for h in horizons:
            settings = folder / f"{SETTINGS}_h{h}.json"
            settings.write_text(json.dumps({"model": forecaster.name, "horizon": int(h)}))
            with quiet_model_logging():
                info = mlflow.pyfunc.log_model(
                    name=f"model_h{h}",
                    python_model=str(MODEL_CODE),
                    artifacts={ARTIFACT: str(artifact), SETTINGS: str(settings)},
                    code_paths=[str(PACKAGE_DIR)],
                    signature=model_signature(forecaster, h),
                    pip_requirements=pins,
                )
            uris[int(h)] = info.model_uri
    return uris
