"""MLflow models-from-code entry point of every logged forecaster.

MLflow runs this file (copied into each logged model as code) when the model is logged and
when it is loaded; it defines :class:`VolForecasterModel` and hands an instance to
``mlflow.models.set_model``. The fitted forecaster is not part of the code: it is the
model's ``forecaster`` artifact, a standard-library pickle of the fitted estimator written
by :func:`models.pyfunc_logging.log_forecaster`, read back in ``load_context``; the
default horizon comes from the ``settings`` artifact (``{"model": ..., "horizon": h}``).

Loading needs the pinned packages of the model's ``requirements.txt`` and the project's
``models`` package, which is logged with the model (``code/models``) and put on
``sys.path`` by MLflow, so ``mlflow.pyfunc.load_model`` works from any directory.
Unpickling runs code: load models only from a store you trust.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class VolForecasterModel(PythonModel):  # type: ignore[misc]
    """A fitted forecaster that forecasts h-day variance from a daily history frame.

    ``predict`` takes the daily panel of ``features.matrix.build_daily_panel`` as plain
    columns: ``symbol``, ``date`` (UTC day; timezone-naive through the MLflow signature,
    which has no time zone) and the columns the forecaster reads (see the model's
    signature). It returns ``symbol, date, horizon, variance, volatility``: the h-day
    variance (decimal, summed over days ``date+1 … date+h``, never annualised) and its
    square root, at the close of every input date; ``date`` comes back as it went in.
    ``params={"horizon": 7}`` overrides the logged horizon (a horizon the forecaster was
    fitted for).
    """

    def __init__(self) -> None:
        self.forecaster: Any = None
        self.horizon = 1

    def load_context(self, context: Any) -> None:
        """Unpickle the fitted forecaster and read the default horizon (``settings``)."""
        import json
        import pickle

        with open(context.artifacts["forecaster"], "rb") as handle:
            self.forecaster = pickle.load(handle)
        with open(context.artifacts["settings"], encoding="utf-8") as handle:
            self.horizon = int(json.load(handle)["horizon"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """h-day variance and volatility forecasts at every row of ``model_input``."""
        import numpy as np

        panel = model_input
        if isinstance(panel.index, pd.MultiIndex):
            panel = panel.reset_index()
        dates = pd.to_datetime(panel["date"])
        naive = dates.dt.tz is None
        panel = panel.assign(
            date=dates.dt.tz_localize("UTC") if naive else dates.dt.tz_convert("UTC")
        )
        panel = panel.set_index(["symbol", "date"]).sort_index()
        horizon = int((params or {}).get("horizon", self.horizon))
        forecast = self.forecaster.forecast(panel, horizon)
        out = forecast.variance.reset_index()
        if naive:
            out["date"] = out["date"].dt.tz_localize(None)
        out.insert(2, "horizon", horizon)
        out["volatility"] = np.sqrt(out["variance"].to_numpy())
        return out


mlflow.models.set_model(VolForecasterModel())
