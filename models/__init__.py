"""Volatility forecasters, walk-forward evaluation and MLflow tracking.

Import MLflow-dependent code from :mod:`models.tracking` explicitly (it is slow to import).
"""

from models.base import UNITS, BaseForecaster, VolForecast, forward_variance
from models.errors import (
    FitFallbackWarning,
    ModelInputError,
    UnknownModelError,
    VarianceFloorWarning,
)
from models.evaluation import METRIC_COLUMNS, EvaluationResult, evaluate
from models.registry import MODEL_NAMES, MODELS, make_model
from models.walkforward import WalkForwardConfig, WalkForwardResult, walk_forward

__all__ = [
    "METRIC_COLUMNS",
    "MODELS",
    "MODEL_NAMES",
    "UNITS",
    "BaseForecaster",
    "EvaluationResult",
    "FitFallbackWarning",
    "ModelInputError",
    "UnknownModelError",
    "VarianceFloorWarning",
    "VolForecast",
    "WalkForwardConfig",
    "WalkForwardResult",
    "evaluate",
    "forward_variance",
    "make_model",
    "walk_forward",
]
