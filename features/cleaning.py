"""The cleaning policy: what is dropped, what stays a gap, and what is only flagged.

Validation (:mod:`features.validation`) rejects broken files outright. Files that pass are
cleaned by exactly one rule, and everything else is counted so that each load can log it:

* **Dropped**: the *launch day* of an hourly series — every bar of the first UTC day when the
  series starts after 00:00 UTC (a listing or contract launch). Those bars are illiquid or
  placeholders (XRP's first spot bar spans 0.5-1.5; the BTC perpetual opens flat at 10000.00).
* **Kept as a gap**: missing bars. Nothing is forward-filled or interpolated.
* **Flagged** (kept unchanged, counted): zero-volume bars, flat bars (open = high = low =
  close), and hourly moves with |log return| above ``LARGE_MOVE``.

``docs/data.md`` states the same policy for users.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

#: Hourly |log return| above which a bar is flagged as a large move (not removed).
LARGE_MOVE = 0.15


@dataclass(frozen=True)
class CleaningCounts:
    """What cleaning did to one file (counts of bars)."""

    rows: int
    dropped_launch_day: int
    missing_bars: int
    gap_runs: int
    longest_gap: int
    zero_volume: int
    flat_bars: int
    large_moves: int

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for frames and logs)."""
        return asdict(self)


def gap_stats(index: pd.DatetimeIndex, step: pd.Timedelta) -> tuple[int, int, int]:
    """Missing bars, number of gap runs and longest run (in bars) of a sorted index."""
    if len(index) < 2:
        return 0, 0, 0
    steps = np.diff(index.as_unit("ns").asi8) // step.value
    missing = steps[steps > 1] - 1
    return int(missing.sum()), int(missing.size), int(missing.max(initial=0))


def drop_launch_day(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop the first UTC day of an hourly series when it starts after 00:00 UTC."""
    if frame.empty:
        return frame, 0
    first = frame.index[0]
    if first == first.normalize():
        return frame, 0
    keep = frame.index >= first.normalize() + pd.Timedelta(days=1)
    return frame.loc[keep], int((~keep).sum())


def clean_series(
    frame: pd.DataFrame, kind: str, interval: str | None
) -> tuple[pd.DataFrame, CleaningCounts]:
    """Apply the policy to one validated frame indexed by timestamp.

    Parameters
    ----------
    frame:
        Validated series indexed by UTC ``timestamp``.
    kind:
        ``spot``, ``perp``, ``mark``, ``funding``, ``dvol`` or ``reference``.
    interval:
        Bar spacing (pandas offset string) or ``None``.
    """
    dropped = 0
    if kind in {"spot", "perp", "mark"}:
        frame, dropped = drop_launch_day(frame)
    step = pd.Timedelta("8h" if kind == "funding" else (interval or "1h"))
    missing, runs, longest = gap_stats(pd.DatetimeIndex(frame.index), step)
    zero_volume = flat = large = 0
    if "volume" in frame.columns:
        zero_volume = int((frame["volume"].to_numpy() == 0).sum())
    if {"open", "high", "low", "close"} <= set(frame.columns):
        o, h, lo, c = (frame[k].to_numpy() for k in ("open", "high", "low", "close"))
        flat = int(((o == h) & (h == lo) & (lo == c)).sum())
        if kind in {"spot", "perp", "mark"} and len(c) > 1:
            consecutive = np.diff(pd.DatetimeIndex(frame.index).as_unit("ns").asi8) == step.value
            moves = np.abs(np.diff(np.log(c)))[consecutive]
            large = int((moves > LARGE_MOVE).sum())
    counts = CleaningCounts(len(frame), dropped, missing, runs, longest, zero_volume, flat, large)
    return frame, counts
