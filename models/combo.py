"""Forecast combination weighted by recent out-of-sample loss."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from models.base import BaseForecaster, forward_variance
from models.losses import qlike_loss

DEFAULT_MEMBERS = ("garch", "gjr", "har", "harq", "lgbm")


def combine_forecasts(
    forecasts: Mapping[str, pd.Series],
    realized: pd.Series,
    horizon: int,
    window: int = 60,
    min_periods: int = 10,
) -> pd.Series:
    r"""Combine member forecasts with weights :math:`w_i \propto 1 / \bar L_i`.

    :math:`\bar L_i` is member i's mean QLIKE over the last ``window`` forecasts whose
    targets are already known at the date of the combination: a forecast made on day
    s for days s+1 … s+h is scored on day s+h, so losses are shifted by ``horizon``
    before the rolling mean. Equal weights until ``min_periods`` losses exist.

    Parameters
    ----------
    forecasts : mapping name → Series indexed by (symbol, date)
        Member h-day variance forecasts (decimal), ideally out of sample.
    realized : Series indexed by (symbol, date)
        Realized h-day variance ``sum rv[t+1..t+h]`` (NaN where unknown).
    horizon : int
        Forecast horizon in days.

    Returns
    -------
    Series of combined h-day variance (decimal), indexed like the members.
    """
    F = pd.DataFrame(dict(forecasts)).sort_index()
    y = realized.reindex(F.index).to_numpy()
    losses = pd.DataFrame({c: qlike_loss(y, F[c].to_numpy()) for c in F.columns}, index=F.index)
    by_symbol = losses.groupby(level="symbol", sort=False)
    known = by_symbol.shift(horizon)
    avg = known.groupby(level="symbol", sort=False).transform(
        lambda s: s.rolling(window, min_periods=min_periods).mean()
    )
    inv = 1.0 / avg.where(avg > 0)
    weights = inv.div(inv.sum(axis=1), axis=0)
    equal = pd.DataFrame(1.0 / F.shape[1], index=F.index, columns=F.columns)
    weights = weights.where(weights.notna().all(axis=1), equal, axis=0)
    return (weights * F).sum(axis=1).rename("variance")


class ComboForecaster(BaseForecaster):
    """Inverse-recent-loss combination of member forecasters.

    ``fit`` fits every member; ``forecast`` combines their forecasts with
    :func:`combine_forecasts`. In the walk-forward evaluation the members' out-of-sample
    forecasts are combined directly, so the weights come from genuine out-of-sample losses.

    Parameters
    ----------
    members : tuple of str
        Registry names of the member models.
    window : int
        Number of recent scored forecasts averaged per member.
    min_periods : int
        Scored forecasts needed before weights leave equal weighting.
    """

    name = "combo"

    def __init__(
        self, members: tuple[str, ...] = DEFAULT_MEMBERS, window: int = 60, min_periods: int = 10
    ) -> None:
        self.members = members
        self.window = window
        self.min_periods = min_periods

    def with_fitted_members(self, members: Mapping[str, BaseForecaster]) -> ComboForecaster:
        """Return a fitted copy that reuses already fitted ``members`` (no refitting)."""
        combo = ComboForecaster(self.members, self.window, self.min_periods)
        combo.members_ = {name: members[name] for name in self.members}
        combo.fallbacks_ = []
        combo.n_fallbacks_ = 0
        combo.origin_ = min(m.origin_ for m in combo.members_.values())
        combo.symbols_ = next(iter(combo.members_.values())).symbols_
        return combo

    def _fit(self, panel: pd.DataFrame) -> None:
        from models.registry import make_model

        self.members_ = {name: make_model(name).fit(panel) for name in self.members}
        for m in self.members_.values():
            self.fallbacks_.extend(m.fallbacks_)

    def _forecast(self, panel: pd.DataFrame, horizon: int, start: pd.Timestamp | None) -> pd.Series:
        member = {n: m.forecast(panel, horizon).variance for n, m in self.members_.items()}
        combined = combine_forecasts(
            member, forward_variance(panel, horizon), horizon, self.window, self.min_periods
        )
        if start is not None:
            combined = combined[combined.index.get_level_values("date") >= start]
        return combined.astype(float).where(np.isfinite(combined))
