"""The engine's frozen result: arrays per account, USD unless stated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from margin.typing import BoolArray, FloatArray, IntArray, StrArray

__all__ = ["MarginResult"]


@dataclass(frozen=True)
class MarginResult:
    """Margin of every account of a book (arrays aligned with ``accounts``).

    Attributes
    ----------
    accounts : account names.
    im, mm : initial and maintenance margin requirements, USD, rounded **up** to the
        settlement precision.
    collateral_value : collateral after MM haircuts, USD, rounded **down**.
    mtm : mark-to-market value of spot and option positions, USD.
    equity : ``collateral_value + mtm``, rounded down.
    margin_ratio : ``mm / equity`` (``inf`` when equity <= 0 < mm, 0 when mm = 0).
    liquidatable : ``equity < mm``.
    worst_scenario : global column of the worst weighted scenario P&L (see
        ``scenario_labels``).
    scenario_part : cross-margin scenario requirement before loss factors and add-ons
        (after offsets and floors), unrounded.
    standalone_sum : sum over underlyings of the worst scenario loss, unrounded.
    isolated_im : sum of the stand-alone IM of every position and collateral holding as if
        each were alone in its own account, unrounded.
    delta, gamma, vega : per account and underlying (columns in ``underlyings`` order):
        delta in coins, gamma in coins per USD, vega in USD per 1.00 of vol.
    underlyings : names of the Greek columns.
    scenario_labels : label of each global scenario column.
    """

    accounts: StrArray
    im: FloatArray
    mm: FloatArray
    collateral_value: FloatArray
    mtm: FloatArray
    equity: FloatArray
    margin_ratio: FloatArray
    liquidatable: BoolArray
    worst_scenario: IntArray
    scenario_part: FloatArray
    standalone_sum: FloatArray
    isolated_im: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    underlyings: tuple[str, ...]
    scenario_labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.accounts)

    def to_frame(self) -> pd.DataFrame:
        """One row per account with the scalar fields and ``delta_<U>``, ``gamma_<U>``..."""
        data: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("underlyings", "scenario_labels", "accounts"):
                continue
            if f.name in ("delta", "gamma", "vega"):
                for j, u in enumerate(self.underlyings):
                    data[f"{f.name}_{u}"] = value[:, j]
            else:
                data[f.name] = value
        frame = pd.DataFrame(data, index=pd.Index(self.accounts, name="account"))
        frame["worst_scenario_label"] = (
            np.asarray(self.scenario_labels, dtype=object)[self.worst_scenario]
            if self.scenario_labels
            else ""
        )
        return frame

    @classmethod
    def concat(cls, parts: Sequence[MarginResult]) -> MarginResult:
        """Stack results of account shards (same underlyings and scenarios) in order."""
        if not parts:
            raise ValueError("MarginResult.concat needs at least one part")
        first = parts[0]
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name in ("underlyings", "scenario_labels"):
                values[f.name] = getattr(first, f.name)
            else:
                values[f.name] = np.concatenate([getattr(p, f.name) for p in parts])
        return cls(**values)  # type: ignore[arg-type]

    def take(self, rows: IntArray) -> MarginResult:
        """Result restricted to the given account rows."""
        values: dict[str, object] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v if f.name in ("underlyings", "scenario_labels") else v[rows]
        return MarginResult(**values)  # type: ignore[arg-type]
