"""Anti-procyclicality (EMIR RTS 153/2013 Art. 28) and bounded parameter updates.

Each tool is switchable and they combine, applied in this order to a margin level ``M`` (a
scan range as a decimal fraction of price, per underlying and side):

1. **stress weight** — ``M ← (1 - w) M + w M_stress`` with ``w ≥ 25%`` and ``M_stress`` the
   margin from stressed observations only (Art. 28(1)(b));
2. **floor** — ``M ← max(M, M_floor)`` with ``M_floor`` the margin from the longest available
   lookback (Art. 28(1)(c) asks for ten years; the data here are shorter);
3. **buffer** — ``B = max(M, min((1 + b) M, (1 + b) M_ref))`` with ``b ≥ 25%`` and ``M_ref`` the
   calm reference level (median of ``M`` over the previous ``buffer_reference_days``): the full
   buffer in calm markets, consumed as ``M`` rises above its reference, fully released once
   ``M`` exceeds ``(1 + b) M_ref`` (Art. 28(1)(a)); never below ``M``;
4. **bounded update** — a decrease is capped at ``max_decrease`` of the previous published
   value per update; an increase is applied at once, never delayed.

Every rule that changes a value is reported, so a parameter file can say which bounds bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

FloatArray = npt.NDArray[np.float64]

#: Stressed observation windows (inclusive UTC dates) used by the stress-weight rule and by
#: the stress sections of the backtest.
STRESS_WINDOWS: Mapping[str, tuple[str, str]] = {
    "2020-03": ("2020-03-01", "2020-03-31"),
    "2021-05": ("2021-05-01", "2021-05-31"),
    "2022-06": ("2022-06-01", "2022-06-30"),
    "2022-11": ("2022-11-01", "2022-11-30"),
}

RULES = ("stress_weight", "floor", "buffer", "buffer_release", "decrease_cap")


class ApcConfig(BaseModel):
    """Anti-procyclicality switches and settings (all off by default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    buffer: bool = False
    buffer_rate: float = Field(0.25, ge=0.25, le=5)
    buffer_reference_days: int = Field(250, ge=5)
    stress_weight: bool = False
    stress_weight_share: float = Field(0.25, ge=0.25, le=1)
    floor: bool = False
    max_decrease: float | None = Field(0.10, gt=0, le=1)

    @classmethod
    def all_on(cls) -> ApcConfig:
        """Every tool switched on with the regulatory minimum settings."""
        return cls(buffer=True, stress_weight=True, floor=True)


def stress_mask(
    dates: pd.DatetimeIndex, windows: Mapping[str, tuple[str, str]]
) -> npt.NDArray[np.bool_]:
    """True for dates inside any of the (inclusive, UTC) stress windows."""
    mask = np.zeros(len(dates), dtype=bool)
    naive = dates.tz_localize(None) if dates.tz is not None else dates
    for first, last in windows.values():
        mask |= (naive >= pd.Timestamp(first)) & (naive <= pd.Timestamp(last))
    return mask


@dataclass(frozen=True)
class ApcResult:
    """Margin after anti-procyclicality, and where each rule bit (same shape as the input)."""

    margin: FloatArray
    bit: Mapping[str, npt.NDArray[np.bool_]]
    buffer_released: FloatArray


def apply_pointwise(
    raw: FloatArray,
    config: ApcConfig,
    stressed: FloatArray | None = None,
    floor: FloatArray | None = None,
    reference: FloatArray | None = None,
) -> ApcResult:
    """Apply the stress weight, floor and buffer (steps 1–3) element-wise.

    Parameters
    ----------
    raw : ndarray
        Calculated margin levels (decimal fractions), any shape.
    stressed, floor, reference : ndarray, optional
        Stressed-observation margin, longest-lookback floor and calm reference level, same
        shape; NaN where not available (the rule then leaves the value alone).
    """
    raw = np.asarray(raw, dtype=float)
    nan = np.full_like(raw, np.nan)
    m = raw.copy()
    bit: dict[str, npt.NDArray[np.bool_]] = {
        rule: np.zeros(raw.shape, dtype=bool) for rule in RULES
    }
    if config.stress_weight and stressed is not None:
        s = np.asarray(stressed, dtype=float)
        w = config.stress_weight_share
        blended = np.where(np.isfinite(s), (1 - w) * m + w * s, m)
        bit["stress_weight"] = blended > m
        m = blended
    if config.floor and floor is not None:
        f = np.asarray(floor, dtype=float)
        floored = np.where(np.isfinite(f), np.maximum(m, f), m)
        bit["floor"] = floored > m
        m = floored
    released = np.zeros_like(raw)
    if config.buffer:
        b = config.buffer_rate
        ref = nan if reference is None else np.asarray(reference, dtype=float)
        full = (1 + b) * m
        capped = np.where(np.isfinite(ref), np.minimum(full, (1 + b) * ref), full)
        buffered = np.maximum(m, capped)
        released = np.clip(1.0 - (buffered - m) / (b * m), 0.0, 1.0)
        bit["buffer"] = buffered > m
        bit["buffer_release"] = released > 1e-12
        m = buffered
    return ApcResult(margin=m, bit=bit, buffer_released=released)


def bounded_update(
    target: FloatArray, previous: FloatArray | None, max_decrease: float | None
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """One update: ``max(target, (1 - max_decrease) × previous)``; increases pass unchanged.

    Returns the published values and where the decrease cap bit. NaN ``previous`` means no
    previous value (first publication).
    """
    target = np.asarray(target, dtype=float)
    if previous is None or max_decrease is None:
        return target, np.zeros(target.shape, dtype=bool)
    lower = (1.0 - max_decrease) * np.asarray(previous, dtype=float)
    out = np.where(np.isfinite(lower), np.maximum(target, lower), target)
    return out, out > target


def bounded_path(
    target: FloatArray, max_decrease: float | None
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Apply :func:`bounded_update` along axis 0 (time) of ``target`` (time × series).

    NaN targets (no parameters that day) keep the last published value for the cap.
    """
    target = np.asarray(target, dtype=float)
    out = target.copy()
    bit = np.zeros(target.shape, dtype=bool)
    if max_decrease is None or target.shape[0] == 0:
        return out, bit
    last = np.full(target.shape[1:], np.nan)
    for t in range(target.shape[0]):
        value, bites = bounded_update(target[t], last, max_decrease)
        out[t], bit[t] = value, bites & np.isfinite(target[t])
        last = np.where(np.isfinite(value), value, last)
    return out, bit


def reference_level(margin: pd.DataFrame, days: int) -> pd.DataFrame:
    """Calm reference for the buffer: rolling median of the previous ``days`` values."""
    return margin.rolling(days, min_periods=max(5, days // 5)).median().shift(1)


def apply_path(
    raw: pd.DataFrame,
    config: ApcConfig,
    stressed: pd.DataFrame | None = None,
    floor: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """All four steps over a time × series frame of calculated margins.

    Returns the published margins and, per rule, a boolean frame of where it bit.
    """
    pre = apply_pointwise(
        raw.to_numpy(float),
        config.model_copy(update={"buffer": False}),
        None if stressed is None else stressed.reindex_like(raw).to_numpy(float),
        None if floor is None else floor.reindex_like(raw).to_numpy(float),
    )
    pre_frame = pd.DataFrame(pre.margin, index=raw.index, columns=raw.columns)
    reference = reference_level(pre_frame, config.buffer_reference_days).to_numpy(float)
    buffered = apply_pointwise(
        pre.margin,
        ApcConfig(
            buffer=config.buffer,
            buffer_rate=config.buffer_rate,
            buffer_reference_days=config.buffer_reference_days,
        ),
        reference=reference,
    )
    published, capped = bounded_path(buffered.margin, config.max_decrease)
    bits = dict(pre.bit)
    bits["buffer"] = buffered.bit["buffer"]
    bits["buffer_release"] = buffered.bit["buffer_release"]
    bits["decrease_cap"] = capped
    frames = {k: pd.DataFrame(v, index=raw.index, columns=raw.columns) for k, v in bits.items()}
    return pd.DataFrame(published, index=raw.index, columns=raw.columns), frames
