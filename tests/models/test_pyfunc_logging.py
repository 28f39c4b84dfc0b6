"""The pyfunc model's code and the logging helpers, without a tracking store."""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from models.pyfunc_logging import model_signature, quiet_model_logging
from models.registry import make_model


def test_quiet_model_logging_is_scoped_to_its_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_UV_AUTO_DETECT", "true")
    env_logger = logging.getLogger("mlflow.utils.environment")
    env_logger.setLevel(logging.INFO)
    other = logging.getLogger("mlflow.pyfunc")
    other_level = other.level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_model_logging():
            assert os.environ["MLFLOW_UV_AUTO_DETECT"] == "false"
            assert env_logger.level == logging.ERROR
            assert logging.getLogger("mlflow.utils.uv_utils").level == logging.ERROR
            assert other.level == other_level  # nothing else is silenced
            hint = "\x1b[1;33mAn input example was not provided\x1b[0m"
            warnings.warn(hint, UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
        warnings.warn(hint, UserWarning, stacklevel=1)  # outside the block: shown again
    assert [str(w.message) for w in caught] == ["something else", hint]
    assert os.environ["MLFLOW_UV_AUTO_DETECT"] == "true"
    assert env_logger.level == logging.INFO


def test_signature_lists_the_columns_and_the_horizon_parameter(sim_panel: pd.DataFrame) -> None:
    model = make_model("harq").fit(sim_panel)
    signature = model_signature(model, 7)
    assert signature.inputs.input_names() == [
        "symbol",
        "date",
        "ret",
        "rv",
        "har_d",
        "har_w",
        "har_m",
        "rq",
    ]
    assert all(c.required for c in signature.inputs.inputs)
    assert [(p.name, p.default) for p in signature.params.params] == [("horizon", 7)]


def _load(forecaster: object, horizon: int, tmp_path: Path) -> object:
    """The code file's model, loaded as MLflow would: artifacts on disk, then load_context."""
    import json

    from models.pyfunc_model import VolForecasterModel

    (tmp_path / "f.pkl").write_bytes(pickle.dumps(forecaster, protocol=5))
    (tmp_path / "s.json").write_text(json.dumps({"horizon": horizon}))
    model = VolForecasterModel()
    context = SimpleNamespace(
        artifacts={"forecaster": str(tmp_path / "f.pkl"), "settings": str(tmp_path / "s.json")}
    )
    model.load_context(context)
    return model


def test_predict_accepts_naive_aware_and_indexed_dates(
    sim_panel: pd.DataFrame, tmp_path: Path
) -> None:
    fitted = make_model("garch").fit(sim_panel)
    model = _load(fitted, 1, tmp_path)
    expected = fitted.forecast(sim_panel, 1).variance.to_numpy()
    flat = sim_panel.reset_index()
    naive = model.predict(None, flat.assign(date=flat["date"].dt.tz_localize(None)))  # type: ignore[attr-defined]
    aware = model.predict(None, flat)  # type: ignore[attr-defined]
    indexed = model.predict(None, sim_panel)  # type: ignore[attr-defined]
    for out in (naive, aware, indexed):
        np.testing.assert_array_equal(out["variance"].to_numpy(), expected)
        np.testing.assert_array_equal(out["volatility"].to_numpy(), np.sqrt(expected))
        assert (out["horizon"] == 1).all()
    assert naive["date"].dt.tz is None and str(aware["date"].dt.tz) == "UTC"
    seven = model.predict(None, flat, params={"horizon": 7})  # type: ignore[attr-defined]
    np.testing.assert_array_equal(
        seven["variance"].to_numpy(), fitted.forecast(sim_panel, 7).variance.to_numpy()
    )
