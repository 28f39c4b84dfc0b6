"""Losses, Diebold-Mariano and MCS against closed forms and an independent t-test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from models.comparison import diebold_mariano, model_confidence_set
from models.losses import mincer_zarnowitz_r2, mse, qlike, qlike_loss


@given(
    y=st.floats(1e-8, 1.0),
    f=st.floats(1e-8, 1.0),
)
@settings(max_examples=200, deadline=None)
def test_qlike_is_nonnegative_and_zero_only_at_the_truth(y: float, f: float) -> None:
    loss = float(qlike_loss([y], [f])[0])
    assert loss >= -1e-12
    assert float(qlike_loss([y], [y])[0]) == pytest.approx(0.0, abs=1e-12)


def test_qlike_closed_form_and_asymmetry() -> None:
    # y/f - ln(y/f) - 1 with y/f = 2 and 0.5
    assert qlike([2.0], [1.0]) == pytest.approx(2 - np.log(2) - 1)
    assert qlike([0.5], [1.0]) == pytest.approx(0.5 - np.log(0.5) - 1)
    # Under-prediction (forecast half the truth) costs more than over-prediction (double).
    assert qlike([1.0], [0.5]) > qlike([1.0], [2.0])


def test_losses_drop_missing_and_nonpositive_pairs() -> None:
    y = np.array([1.0, np.nan, 0.0, 2.0])
    f = np.array([1.0, 1.0, 1.0, 1.0])
    assert qlike(y, f) == pytest.approx(np.mean([0.0, 2 - np.log(2) - 1]))
    assert mse(y, f) == pytest.approx(np.mean([0.0, 1.0]))


def test_mincer_zarnowitz_r2_is_one_for_an_exact_log_linear_relation() -> None:
    f = np.exp(np.linspace(-8, -4, 50))
    assert mincer_zarnowitz_r2(2.0 * f**0.8, f) == pytest.approx(1.0)


def test_dm_at_h1_equals_the_one_sample_t_test() -> None:
    rng = np.random.default_rng(3)
    a = rng.chisquare(3, 400)
    b = a + rng.normal(0.1, 1.0, 400)
    res = diebold_mariano(a, b, horizon=1)
    ref = stats.ttest_1samp(a - b, 0.0)
    # With h = 1 the HLN factor turns the DM statistic into exactly the t statistic.
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert res.pvalue == pytest.approx(ref.pvalue, rel=1e-8)


def test_dm_hac_widens_the_variance_for_overlapping_losses() -> None:
    rng = np.random.default_rng(4)
    e = rng.normal(size=1007)
    d = np.convolve(e, np.ones(7), mode="valid") / 7 + 0.05  # MA(6): h = 7 overlap
    naive = diebold_mariano(d, np.zeros_like(d), horizon=1)
    hac = diebold_mariano(d, np.zeros_like(d), horizon=7)
    assert abs(hac.statistic) < abs(naive.statistic)
    assert hac.pvalue > naive.pvalue


def test_mcs_keeps_equal_models_and_drops_a_clearly_worse_one() -> None:
    rng = np.random.default_rng(5)
    base = rng.chisquare(2, 600)
    losses = pd.DataFrame(
        {
            "good": base + rng.normal(0, 0.05, 600),
            "same": base + rng.normal(0, 0.05, 600),
            "bad": base + 1.0 + rng.normal(0, 0.05, 600),
        }
    )
    inside = model_confidence_set(losses, size=0.1, reps=200, seed=1)
    assert inside["good"] and inside["same"]
    assert not inside["bad"]
