"""Named warnings and errors of the forecasting layer.

Warnings are classes (as in ``arch``) so callers can filter or escalate them precisely.
"""

from __future__ import annotations


class FitFallbackWarning(RuntimeWarning):
    """A fit failed on one window; the model fell back to previous parameters or EWMA."""


class VarianceFloorWarning(RuntimeWarning):
    """A forecast was non-finite or not positive and was replaced by the EWMA fallback."""


class ModelInputError(ValueError):
    """The panel or arguments given to a forecaster are unusable (one-sentence message)."""


class UnknownModelError(ModelInputError):
    """A model name is not in the registry."""
