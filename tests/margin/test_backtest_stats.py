"""Coverage tests and the traffic light against published tables and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from margin.backtest import christoffersen, kupiec_pof, traffic_light

# Basel Committee (1996) table for 250 days at 99%: cumulative probability (%) and zone.
BASEL_TABLE = [
    (0, 8.11, "green"),
    (1, 28.58, "green"),
    (2, 54.32, "green"),
    (3, 75.81, "green"),
    (4, 89.22, "green"),
    (5, 95.88, "yellow"),
    (6, 98.63, "yellow"),
    (7, 99.60, "yellow"),
    (8, 99.89, "yellow"),
    (9, 99.97, "yellow"),
    (10, 99.99, "red"),
    (15, 100.0, "red"),
]


@pytest.mark.parametrize(("exceptions", "cum_pct", "zone"), BASEL_TABLE)
def test_traffic_light_matches_basel_table(exceptions: int, cum_pct: float, zone: str) -> None:
    from scipy import stats

    assert round(100 * stats.binom.cdf(exceptions, 250, 0.01), 2) == pytest.approx(cum_pct)
    assert traffic_light(exceptions, 250, 0.01) == zone


def test_traffic_light_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="n_breaches"):
        traffic_light(5, 3, 0.01)
    with pytest.raises(ValueError, match="p must be"):
        traffic_light(0, 10, 1.5)


def _sequence(n: int, singles: int, pairs: int) -> np.ndarray:
    """A 0/1 sequence starting and ending with 0, with isolated breaches and breach pairs."""
    runs = [1] * singles + [2] * pairs
    out = np.zeros(n, dtype=bool)
    gap = (n - sum(runs)) // (len(runs) + 1)
    pos = gap
    for run in runs:
        out[pos : pos + run] = True
        pos += run + gap
    return out


def test_mathworks_varbacktest_example() -> None:
    # MathWorks varbacktest pof/cci/cc example: 1043 observations at VaR 95%, 57 failures,
    # N00=932, N10=53, N01=53, N11=4 -> POF 0.46147 (p 0.49694), CCI 0.25866 (p 0.61104),
    # CC 0.72013 (p 0.69763).
    seq = _sequence(1043, singles=49, pairs=4)
    assert seq.sum() == 57
    pof = kupiec_pof(seq, 0.05)
    assert pof.stat == pytest.approx(0.46147, abs=5e-5)
    assert pof.pvalue == pytest.approx(0.49694, abs=5e-5)
    res = christoffersen(seq, 0.05)
    assert (res.n00, res.n10, res.n01, res.n11) == (932, 53, 53, 4)
    assert res.ind_stat == pytest.approx(0.25866, abs=5e-5)
    assert res.ind_pvalue == pytest.approx(0.61104, abs=5e-5)
    assert res.cc_stat == pytest.approx(0.72013, abs=5e-5)
    assert res.cc_pvalue == pytest.approx(0.69763, abs=5e-5)


def test_kupiec_hand_computed() -> None:
    # 250 days, 5 breaches, p = 1%:
    # LR = -2[245 ln 0.99 + 5 ln 0.01] + 2[245 ln 0.98 + 5 ln 0.02]
    expected = -2 * (245 * math.log(0.99) + 5 * math.log(0.01)) + 2 * (
        245 * math.log(0.98) + 5 * math.log(0.02)
    )
    seq = np.zeros(250, dtype=bool)
    seq[[10, 60, 110, 160, 210]] = True
    stat, pvalue = kupiec_pof(seq, 0.01)
    assert stat == pytest.approx(expected, rel=1e-12)
    assert pvalue == pytest.approx(math.erfc(math.sqrt(expected / 2)), rel=1e-10)


def test_kupiec_zero_breaches_drops_zero_terms() -> None:
    # x = 0: LR = -2 N ln(1-p) (the x ln(x/N) and x ln p terms vanish).
    stat, pvalue = kupiec_pof(np.zeros(300, dtype=bool), 0.01)
    assert stat == pytest.approx(-2 * 300 * math.log(0.99), rel=1e-12)
    assert 0 < pvalue < 0.05


def test_kupiec_all_breaches() -> None:
    stat, _ = kupiec_pof(np.ones(10, dtype=bool), 0.01)
    assert stat == pytest.approx(-2 * 10 * math.log(0.01), rel=1e-12)


def test_christoffersen_no_breaches_is_independent() -> None:
    res = christoffersen(np.zeros(100, dtype=bool), 0.01)
    assert res.ind_stat == 0.0
    assert res.ind_pvalue == 1.0
    assert res.cc_stat == pytest.approx(kupiec_pof(np.zeros(100, dtype=bool), 0.01).stat)


def test_christoffersen_hand_computed_with_empty_cell() -> None:
    # 0 0 1 0 0 1 0 0 0 0: N00=5, N01=2, N10=2, N11=0 -> the N11 term is dropped.
    seq = np.array([0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    res = christoffersen(seq, 0.05)
    assert (res.n00, res.n01, res.n10, res.n11) == (5, 2, 2, 0)
    pi = 2 / 9
    pi01 = 2 / 7
    expected = -2 * (7 * math.log(1 - pi) + 2 * math.log(pi)) + 2 * (
        5 * math.log(1 - pi01) + 2 * math.log(pi01) + 2 * math.log(1.0)
    )
    assert res.ind_stat == pytest.approx(expected, rel=1e-12)


def test_christoffersen_detects_clustering() -> None:
    seq = np.zeros(500, dtype=bool)
    seq[200:210] = True
    res = christoffersen(seq, 0.02)
    assert res.ind_pvalue < 1e-6


@given(st.lists(st.booleans(), min_size=2, max_size=400), st.floats(0.001, 0.2))
def test_statistics_are_valid(seq: list[bool], p: float) -> None:
    pof = kupiec_pof(seq, p)
    res = christoffersen(seq, p)
    for value in (pof.stat, res.ind_stat, res.cc_stat):
        assert math.isfinite(value) and value >= 0
    for prob in (pof.pvalue, res.ind_pvalue, res.cc_pvalue):
        assert 0 <= prob <= 1
    assert res.cc_stat == pytest.approx(pof.stat + res.ind_stat)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="0/1"):
        kupiec_pof([0, 2, 1], 0.01)
    with pytest.raises(ValueError, match="one-dimensional"):
        christoffersen(np.zeros((2, 2)), 0.01)
