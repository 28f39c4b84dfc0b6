"""Invariants of the engine, by hypothesis over small random books."""

from __future__ import annotations

import numpy as np
import pandas as pd
from engine_books import BTC, instruments_frame, make_book, market_frames
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from margin.book import Book
from margin.engine import compute_margin, compute_margin_sharded
from margin.methodology import Methodology

INSTRUMENTS = list(instruments_frame()["instrument"])
DELTA_ONE = ["BTC-PERP", "BTC-INV", "BTC-FUT", "BTC-SPOT", "ETH-PERP"]
METHODS = {
    "none": Methodology(offsets={"mode": "none"}, addons={"concentration": 0.0}),
    "correlation": Methodology(
        offsets={
            "mode": "correlation",
            "underlyings": ("BTC", "ETH"),
            "correlation": ((1.0, 0.8), (0.8, 1.0)),
        },
        haircuts_mm={"BTC": 0.02},
        haircuts_im_extra={"BTC": 0.01},
        addons={"short_option_minimum": 0.001},
    ),
}
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

quantity = st.integers(-20, 20).filter(lambda q: q != 0).map(lambda q: q / 4)


@st.composite
def books(draw: st.DrawFn, instruments: list[str] = INSTRUMENTS) -> tuple[list, list]:  # type: ignore[type-arg]
    n_accounts = draw(st.integers(1, 4))
    positions, collateral = [], []
    for a in range(n_accounts):
        held = draw(st.lists(st.sampled_from(instruments), min_size=1, max_size=6, unique=True))
        for inst in held:
            q = draw(quantity)
            if inst == "BTC-INV":
                q *= 5_000.0  # 10 USD contracts: comparable notional
            elif inst.startswith("ETH"):
                q *= 20.0
            positions.append((f"acct{a}", inst, q))
        if draw(st.booleans()):
            asset = draw(st.sampled_from(["USD", "BTC"]))
            amount = draw(st.floats(0.0, 3.0)) * (100_000.0 if asset == "USD" else 1.0)
            collateral.append((f"acct{a}", asset, amount))
    return positions, collateral


def _book(spec: tuple[list, list]) -> Book:  # type: ignore[type-arg]
    return make_book(spec[0], spec[1])


@SETTINGS
@given(spec=books(), method=st.sampled_from(sorted(METHODS)), seed=st.integers(0, 2**16))
def test_permutation_of_instruments_and_accounts(
    spec: tuple[list, list],
    method: str,
    seed: int,  # type: ignore[type-arg]
) -> None:
    m = METHODS[method]
    book = _book(spec)
    base = compute_margin(book, m, scan_precision="float64")
    rng = np.random.default_rng(seed)
    # instruments in another order and position rows shuffled: the same book, other columns
    inst = instruments_frame().sample(frac=1.0, random_state=seed).reset_index(drop=True)
    market, und = market_frames()
    pos = pd.DataFrame(spec[0], columns=["account", "instrument", "quantity"])
    pos = pos.sample(frac=1.0, random_state=seed)
    col = pd.DataFrame(spec[1], columns=["account", "asset", "amount"])
    other = Book.from_frames(inst, pos, col, market.sample(frac=1.0, random_state=seed), und)
    res = compute_margin(other, m, scan_precision="float64")
    np.testing.assert_array_equal(res.accounts, base.accounts)
    for field in ("im", "mm", "equity", "isolated_im", "scenario_part"):
        np.testing.assert_allclose(
            getattr(res, field), getattr(base, field), rtol=1e-12, atol=0.011
        )
    # accounts permuted: results permuted the same way, bit for bit
    perm = rng.permutation(book.n_accounts)
    shuffled = compute_margin(book.select_accounts(perm), m, scan_precision="float64")
    for field in ("im", "mm", "equity", "isolated_im", "delta", "worst_scenario"):
        np.testing.assert_array_equal(getattr(shuffled, field), getattr(base, field)[perm])


@SETTINGS
@given(
    spec=books(),
    method=st.sampled_from(sorted(METHODS)),
    scale=st.floats(0.01, 100.0),
)
def test_positive_homogeneity_of_the_scenario_part(
    spec: tuple[list, list],
    method: str,
    scale: float,  # type: ignore[type-arg]
) -> None:
    m = METHODS[method]
    base = compute_margin(_book(spec), m, scan_precision="float64")
    scaled_spec = (
        [(a, i, q * scale) for a, i, q in spec[0]],
        [(a, s, x * scale) for a, s, x in spec[1]],
    )
    scaled = compute_margin(_book(scaled_spec), m, scan_precision="float64")
    np.testing.assert_allclose(
        scaled.scenario_part, scale * base.scenario_part, rtol=1e-9, atol=1e-7
    )
    np.testing.assert_allclose(
        scaled.standalone_sum, scale * base.standalone_sum, rtol=1e-9, atol=1e-7
    )


@SETTINGS
@given(spec=books(), method=st.sampled_from(sorted(METHODS)))
def test_cross_margin_never_exceeds_isolated_sum(
    spec: tuple[list, list],
    method: str,  # type: ignore[type-arg]
) -> None:
    res = compute_margin(_book(spec), METHODS[method])
    # IM is rounded up to the cent; the isolated sum is not rounded
    assert np.all(res.im <= res.isolated_im + 0.01 + 1e-9 * res.isolated_im)
    assert np.all(res.mm <= res.im)


@SETTINGS
@given(q=st.floats(0.01, 50.0), side=st.sampled_from([-1.0, 1.0]), usd=st.floats(0.0, 1e6))
def test_perfect_hedge_leaves_only_the_addons(q: float, side: float, usd: float) -> None:
    # q BTC of linear perp against the same USD notional of inverse perp (10 USD contracts)
    book = make_book(
        [("a", "BTC-PERP", side * q), ("a", "BTC-INV", -side * q * BTC / 10.0)],
        [("a", "USD", usd)],
    )
    res = compute_margin(book, Methodology(), scan_precision="float64")
    assert res.standalone_sum[0] <= 1e-9 * q * BTC
    hedged_floor = 0.01 * q * BTC  # 1% of the hedged delta (q coins)
    perp = 0.005 * 2 * q * BTC  # contingency on both perps
    np.testing.assert_allclose(res.scenario_part[0], hedged_floor, rtol=1e-9)
    np.testing.assert_allclose(res.im[0], hedged_floor + perp, atol=0.011)
    assert res.equity[0] == np.floor(usd * 100) / 100


@SETTINGS
@given(spec=books(), factor=st.floats(1.0, 3.0))
def test_margin_monotone_in_shock_size(
    spec: tuple[list, list],
    factor: float,  # type: ignore[type-arg]
) -> None:
    book = _book(spec)
    # nested grids: twice the range with twice the steps contains every scenario of the first
    small = Methodology(offsets={"mode": "none"})
    cfg = small.default_scenarios
    large = small.model_copy(
        update={
            "default_scenarios": cfg.model_copy(
                update={"price_range": 2 * cfg.price_range, "n_price_steps": 2 * cfg.n_price_steps}
            )
        }
    )
    a = compute_margin(book, small, scan_precision="float64")
    b = compute_margin(book, large, scan_precision="float64")
    assert np.all(b.im >= a.im) and np.all(b.mm >= a.mm)
    # delta-one books: any larger shock (all moves scaled) gives a larger margin, any offsets
    linear = _book(([p for p in spec[0] if p[1] in DELTA_ONE] or [("x", "BTC-PERP", 1.0)], spec[1]))
    m = METHODS["correlation"]
    lo = compute_margin(linear, m, scan_precision="float64")
    hi = compute_margin(linear, m.with_shock_scale(factor), scan_precision="float64")
    assert np.all(hi.scenario_part >= lo.scenario_part * (1 - 1e-12))
    assert np.all(hi.im >= lo.im)


@SETTINGS
@given(spec=books(), n_shards=st.integers(1, 5), method=st.sampled_from(sorted(METHODS)))
def test_sharded_results_identical(
    spec: tuple[list, list],
    n_shards: int,
    method: str,  # type: ignore[type-arg]
) -> None:
    book = _book(spec)
    whole = compute_margin(book, METHODS[method])
    sharded = compute_margin_sharded(book, METHODS[method], n_shards)
    for field in ("im", "mm", "equity", "margin_ratio", "isolated_im", "delta", "worst_scenario"):
        np.testing.assert_array_equal(getattr(whole, field), getattr(sharded, field))
