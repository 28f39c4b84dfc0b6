"""Add-ons and floors, each on a book that isolates it, against hand arithmetic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from engine_books import BTC, ETH, instruments_frame, make_book, market_frames

from margin.book import Book
from margin.engine import compute_margin
from margin.methodology import Methodology

NO_SCAN = {
    "price_range": 1e-9,
    "tail_moves": (),
    "tail_weights": (),
    "vol_up": 0.0,
    "vol_down": 0.0,
    "min_vol_up": 0.0,
}


def _only_addons(**addons: float) -> Methodology:
    """Scan of (almost) zero size so the requirement is the add-ons alone."""
    return Methodology(default_scenarios=NO_SCAN, offsets={"mode": "none"}, addons=addons)


def test_naked_shorts_per_strike_pool_calls_and_puts() -> None:
    # call +10 and put -20 at the same strike: net short 10 (Deribit's published example);
    # a long call at another strike does not cover
    book = make_book(
        [("a", "BTC-50000-C", 10.0), ("a", "BTC-50000-P", -20.0), ("a", "BTC-55000-C", 5.0)]
    )
    m = _only_addons(
        short_option_im=0.01, short_option_mm=0.005, min_delta_net=0.0, min_delta_hedged=0.0
    )
    res = compute_margin(book, m)
    assert res.im[0] == pytest.approx(0.01 * 10 * BTC, abs=0.02)
    assert res.mm[0] == pytest.approx(0.005 * 10 * BTC, abs=0.02)


def test_minimum_delta_charge() -> None:
    # 3 BTC long perp, 1 BTC short future: net 2, gross 4, hedged (4 - 2) / 2 = 1
    book = make_book([("a", "BTC-PERP", 3.0), ("a", "BTC-FUT", -1.0)])
    m = _only_addons(min_delta_net=0.02, min_delta_hedged=0.01, perp_im=0.0, perp_mm=0.0)
    res = compute_margin(book, m)
    assert res.delta[0, 0] == pytest.approx(2.0)
    assert res.im[0] == pytest.approx((0.02 * 2.0 + 0.01 * 1.0) * BTC, abs=0.011)


def test_min_delta_config_must_stay_subadditive() -> None:
    with pytest.raises(ValueError, match="min_delta_hedged"):
        Methodology(addons={"min_delta_net": 0.01, "min_delta_hedged": 0.03})


def test_oracle_confidence_addon_only_below_threshold_and_only_on_im() -> None:
    m = _only_addons(
        oracle_threshold=0.55,
        oracle_margin=1.0,
        min_delta_net=0.0,
        min_delta_hedged=0.0,
        perp_im=0.0,
        perp_mm=0.0,
    )
    low = make_book([("a", "ETH-PERP", -4.0)], confidence=0.5)
    high = make_book([("a", "ETH-PERP", -4.0)], confidence=0.6)
    r_low, r_high = compute_margin(low, m), compute_margin(high, m)
    assert r_low.im[0] == pytest.approx((1 - 0.5) * 4 * ETH, abs=0.011)
    # the near-zero scan leaves at most one cent after rounding up
    assert r_low.mm[0] <= 0.01
    assert r_high.im[0] <= 0.01


def test_concentration_addon_square_root_form() -> None:
    market, und = market_frames()
    market = market.assign(liquidity=np.where(market["instrument"] == "BTC-PERP", 100.0, np.nan))
    pos = pd.DataFrame(
        {"account": ["a", "b"], "instrument": ["BTC-PERP", "BTC-PERP"], "quantity": [4.0, 16.0]}
    )
    col = pd.DataFrame(columns=["account", "asset", "amount"])
    book = Book.from_frames(instruments_frame(), pos, col, market, und)
    m = _only_addons(
        concentration=0.1,
        concentration_mm_share=0.5,
        min_delta_net=0.0,
        min_delta_hedged=0.0,
        perp_im=0.0,
        perp_mm=0.0,
    )
    res = compute_margin(book, m)
    expected = [0.1 * q * BTC * np.sqrt(q / 100.0) for q in (4.0, 16.0)]
    np.testing.assert_allclose(res.im, expected, atol=0.011)
    np.testing.assert_allclose(res.mm, np.array(expected) / 2, atol=0.011)
    assert res.im[1] / res.im[0] == pytest.approx(8.0, rel=1e-4)  # 4x size -> 8x charge


def test_short_option_minimum_is_a_floor() -> None:
    book = make_book([("a", "BTC-55000-C", -2.0), ("a", "BTC-45000-P", 1.0)])
    m = _only_addons(
        short_option_minimum=0.05,
        short_option_im=0.0,
        short_option_mm=0.0,
        min_delta_net=0.0,
        min_delta_hedged=0.0,
    )
    res = compute_margin(book, m)
    assert res.scenario_part[0] == pytest.approx(0.05 * 2 * BTC)


def test_perp_contingency() -> None:
    book = make_book([("a", "BTC-PERP", -2.0), ("a", "BTC-INV", 1_000.0), ("a", "BTC-FUT", 1.0)])
    m = _only_addons(perp_im=0.02, perp_mm=0.015, min_delta_net=0.0, min_delta_hedged=0.0)
    res = compute_margin(book, m)
    notional = 2 * BTC + 1_000 * 10.0  # futures carry no perp contingency
    assert res.im[0] == pytest.approx(0.02 * notional, abs=0.011)
    assert res.mm[0] == pytest.approx(0.015 * notional, abs=0.011)
