"""Errors and warnings raised by the margin engine.

User-caused problems are :class:`ValueError` subclasses whose message is one sentence naming
the input (file, row, column, rule), so the CLI can print them as a single line.
"""

from __future__ import annotations

__all__ = ["BookError", "MethodologyError", "VolSurfaceError", "VolSurfaceExtrapolationWarning"]


class BookError(ValueError):
    """A book (instruments, positions, collateral, market snapshot) is invalid."""


class MethodologyError(ValueError):
    """A methodology configuration is inconsistent with the book it is applied to."""


class VolSurfaceError(ValueError):
    """A volatility surface cannot be built from the given points."""


class VolSurfaceExtrapolationWarning(UserWarning):
    """A vol was read from a surface outside its quoted range (flat extrapolation used)."""
