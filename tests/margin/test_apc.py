"""Anti-procyclicality tools and bounded updates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from margin.apc import (
    ApcConfig,
    apply_path,
    apply_pointwise,
    bounded_path,
    bounded_update,
    stress_mask,
)


def test_regulatory_minimums_are_enforced() -> None:
    with pytest.raises(ValidationError):
        ApcConfig(buffer=True, buffer_rate=0.2)
    with pytest.raises(ValidationError):
        ApcConfig(stress_weight=True, stress_weight_share=0.1)


def test_buffer_full_in_calm_consumed_then_released() -> None:
    config = ApcConfig(buffer=True, buffer_rate=0.25)
    raw = np.array([0.10, 0.11, 0.125, 0.20])
    ref = np.full(4, 0.10)
    res = apply_pointwise(raw, config, reference=ref)
    # calm: full 25% buffer; rising: flat at (1+b) ref; beyond it: no buffer, never below raw.
    np.testing.assert_allclose(res.margin, [0.125, 0.125, 0.125, 0.20])
    np.testing.assert_allclose(res.buffer_released, [0.0, 1 - 0.015 / 0.0275, 1.0, 1.0], atol=1e-12)
    assert res.bit["buffer_release"].tolist() == [False, True, True, True]


def test_stress_weight_and_floor() -> None:
    config = ApcConfig(stress_weight=True, stress_weight_share=0.25, floor=True)
    raw = np.array([0.05, 0.05, 0.05])
    stressed = np.array([0.25, np.nan, 0.25])
    floor = np.array([0.06, 0.08, 0.20])
    res = apply_pointwise(raw, config, stressed=stressed, floor=floor)
    # 0.75*0.05 + 0.25*0.25 = 0.1 (above floor 0.06); no stressed obs -> floor 0.08; floor 0.2.
    np.testing.assert_allclose(res.margin, [0.10, 0.08, 0.20])
    assert res.bit["stress_weight"].tolist() == [True, False, True]
    assert res.bit["floor"].tolist() == [False, True, True]


def test_decrease_is_capped_increase_is_immediate() -> None:
    out, bit = bounded_update(np.array([0.05, 0.30]), np.array([0.10, 0.10]), 0.10)
    np.testing.assert_allclose(out, [0.09, 0.30])
    assert bit.tolist() == [True, False]


def test_bounded_path_walks_down_ten_percent_a_day() -> None:
    target = np.array([[0.2], [0.1], [0.1], [0.1], [0.3]])
    out, bit = bounded_path(target, 0.10)
    np.testing.assert_allclose(out[:, 0], [0.2, 0.18, 0.162, 0.1458, 0.3])
    assert bit[:, 0].tolist() == [False, True, True, True, False]


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (40, 2), elements=st.floats(0.001, 1.0)), st.floats(0.01, 0.5))
def test_published_never_below_target_and_decreases_bounded(target: np.ndarray, cap: float) -> None:
    out, _ = bounded_path(target, cap)
    assert (out >= target - 1e-15).all()
    assert (out[1:] >= (1 - cap) * out[:-1] - 1e-15).all()
    # whenever the target rises above yesterday's value, it is published at once
    rises = target[1:] >= out[:-1]
    np.testing.assert_allclose(out[1:][rises], target[1:][rises])


def test_apply_path_all_tools_never_below_raw() -> None:
    rng = np.random.default_rng(0)
    idx = pd.date_range("2020-01-01", periods=400, freq="D", tz="UTC")
    raw = pd.DataFrame({"a": np.exp(rng.normal(-2.5, 0.4, 400))}, index=idx)
    floor = pd.DataFrame({"a": np.full(400, 0.07)}, index=idx)
    stressed = pd.DataFrame({"a": np.full(400, 0.3)}, index=idx)
    out, bits = apply_path(raw, ApcConfig.all_on(), stressed, floor)
    assert (out["a"] >= raw["a"] - 1e-15).all()
    assert (out["a"] >= 0.07).all()
    assert set(bits) == {"stress_weight", "floor", "buffer", "buffer_release", "decrease_cap"}
    assert bits["stress_weight"]["a"].all()
    # APC smooths: the largest one-day jump is smaller than without it
    assert (out["a"].pct_change().max()) < raw["a"].pct_change().max()


def test_stress_mask_inclusive() -> None:
    dates = pd.DatetimeIndex(["2020-02-29", "2020-03-01", "2020-03-31", "2020-04-01"], tz="UTC")
    assert stress_mask(dates, {"x": ("2020-03-01", "2020-03-31")}).tolist() == [
        False,
        True,
        True,
        False,
    ]
