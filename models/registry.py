"""Model names → forecaster classes. The names are used everywhere (MLflow, CSV, files)."""

from __future__ import annotations

from typing import Any

from models.base import BaseForecaster
from models.combo import ComboForecaster
from models.errors import UnknownModelError
from models.ewma import AsymmetricEWMAForecaster, EWMAForecaster
from models.garch import EGARCHForecaster, GARCHForecaster, GJRForecaster
from models.har import HARForecaster, HARQForecaster
from models.lgbm import LGBMForecaster

MODELS: dict[str, type[BaseForecaster]] = {
    cls.name: cls
    for cls in (
        EWMAForecaster,
        AsymmetricEWMAForecaster,
        GARCHForecaster,
        GJRForecaster,
        EGARCHForecaster,
        HARForecaster,
        HARQForecaster,
        LGBMForecaster,
        ComboForecaster,
    )
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def make_model(name: str, **params: Any) -> BaseForecaster:
    """Build the forecaster registered under ``name`` with hyper-parameters ``params``.

    Raises
    ------
    UnknownModelError
        If ``name`` is not one of :data:`MODEL_NAMES`.
    """
    try:
        cls = MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}."
        ) from None
    return cls(**params)
