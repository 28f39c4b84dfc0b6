"""Market history: loading, validation, cleaning, realized measures and feature panels.

Public API::

    from features import load_market_history, build_daily_panel, daily_realized_measures

    history = load_market_history("data", ["BTC", "ETH"], start="2018", end="2024")
    panel = build_daily_panel(history)          # MultiIndex (symbol, date)
"""

from features.errors import DataValidationError, MissingDataError
from features.history import MarketHistory, load_market_history
from features.layout import SYMBOLS
from features.matrix import FEATURE_COLUMNS, HORIZONS, build_daily_panel
from features.realized import (
    daily_realized_measures,
    garman_klass,
    parkinson,
    rogers_satchell,
    yang_zhang,
)
from features.reference_price import reference_price
from features.summary import DataCheck, check_data_dir
from features.sync import sync_from_mirror

__all__ = [
    "FEATURE_COLUMNS",
    "HORIZONS",
    "SYMBOLS",
    "DataCheck",
    "DataValidationError",
    "MarketHistory",
    "MissingDataError",
    "build_daily_panel",
    "check_data_dir",
    "daily_realized_measures",
    "garman_klass",
    "load_market_history",
    "parkinson",
    "reference_price",
    "rogers_satchell",
    "sync_from_mirror",
    "yang_zhang",
]
