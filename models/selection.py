"""Champion/challenger selection on a validation window that precedes the evaluation.

The rule never looks at the evaluation window: the champion is the model with the lowest
pooled QLIKE over all symbols on the validation window ``[validation_start, eval_start)``,
the challenger the runner-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from models.errors import ModelInputError
from models.losses import qlike

SELECTION_RULE = (
    "lowest pooled QLIKE (all symbols) of the out-of-sample forecasts on the validation "
    "window that ends the day before the evaluation start; the evaluation window is never used"
)


@dataclass(frozen=True)
class Selection:
    """Outcome of the selection rule for one horizon.

    ``scores`` holds the pooled validation QLIKE per model (ascending).
    """

    horizon: int
    champion: str
    challenger: str | None
    rule: str
    reason: str
    window_start: pd.Timestamp
    window_end: pd.Timestamp
    scores: pd.Series


def select_champion(
    forecasts: Mapping[tuple[str, int], pd.Series],
    realized: pd.Series,
    horizon: int,
    window_start: pd.Timestamp,
    window_end: pd.Timestamp,
) -> Selection:
    """Apply :data:`SELECTION_RULE` to the forecasts made in ``[window_start, window_end]``.

    Parameters
    ----------
    forecasts : mapping (model, horizon) → Series indexed by (symbol, date)
        Out-of-sample h-day variance forecasts (decimal).
    realized : Series indexed by (symbol, date)
        Realized h-day variance.
    horizon : int
        Horizon to select for.
    window_start, window_end : Timestamp
        Inclusive validation window; it must end before the evaluation start.
    """
    scores: dict[str, float] = {}
    for (model, h), f in forecasts.items():
        if h != horizon:
            continue
        dates = f.index.get_level_values("date")
        f = f[(dates >= window_start) & (dates <= window_end)]
        scores[model] = qlike(realized.reindex(f.index).to_numpy(), f.to_numpy())
    ranked = pd.Series(scores, dtype=float).dropna().sort_values(kind="stable")
    if ranked.empty:
        raise ModelInputError(
            f"no forecasts with known outcomes in the validation window "
            f"{pd.Timestamp(window_start).date()} to {pd.Timestamp(window_end).date()}."
        )
    champion = str(ranked.index[0])
    challenger = str(ranked.index[1]) if len(ranked) > 1 else None
    reason = (
        f"{champion} has the lowest pooled QLIKE at h={horizon} on "
        f"{pd.Timestamp(window_start).date()}..{pd.Timestamp(window_end).date()} "
        f"({ranked.iloc[0]:.4f}"
        + (f"; runner-up {challenger} {ranked.iloc[1]:.4f})" if challenger else ")")
    )
    return Selection(
        horizon,
        champion,
        challenger,
        SELECTION_RULE,
        reason,
        pd.Timestamp(window_start),
        pd.Timestamp(window_end),
        ranked,
    )
