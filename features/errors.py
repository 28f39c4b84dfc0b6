"""Errors raised by the market-history layer.

Both are user errors: the CLI prints their one-sentence message and exits with code 2.
"""

from __future__ import annotations


class DataValidationError(ValueError):
    """A data file breaks a validation rule; the message names file, row, column and rule."""


class MissingDataError(FileNotFoundError):
    """A data file or folder the caller asked for does not exist."""
