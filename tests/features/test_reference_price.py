"""Consolidated reference price: median of live sources, deviations, confidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import MarketHistory, load_market_history
from features.reference_price import SINGLE_SOURCE, reference_price

WINDOW = slice("2021-05-19 00:00", "2021-05-20 23:00")  # a volatile real window


@pytest.fixture(scope="module")
def btc(shared_data_dir: Path) -> MarketHistory:
    return load_market_history(
        shared_data_dir, ["BTC"], start="2021-05-01", end="2021-05-31", use_cache=False
    )


def with_source(history: MarketHistory, kind: str, frame: pd.DataFrame) -> MarketHistory:
    fields = {k: dict(getattr(history, k)) for k in ("spot", "perp", "mark", "funding", "dvol")}
    fields[kind]["BTC"] = frame
    return MarketHistory(**fields, options={})


def test_three_sources_agree_on_real_data(btc: MarketHistory) -> None:
    ref = reference_price(btc, "BTC")
    closes = np.column_stack(
        [btc.spot["BTC"]["close"], btc.perp["BTC"]["close"], btc.mark["BTC"]["close"]]
    )
    np.testing.assert_allclose(ref["price"], np.median(closes, axis=1), rtol=1e-12)
    assert (ref["n_live"] == 3).all()
    assert ref["confidence"].median() > 0.99
    assert ref["confidence"].between(0, 1).all()


def test_survives_one_bad_source(btc: MarketHistory) -> None:
    good = reference_price(btc, "BTC")
    perp = btc.perp["BTC"].copy()
    perp.loc[WINDOW, ["open", "high", "low", "close"]] *= 1.5  # a broken feed
    bad = reference_price(with_source(btc, "perp", perp), "BTC")
    spot = btc.spot["BTC"]["close"].loc[WINDOW]
    mark = btc.mark["BTC"]["close"].loc[WINDOW]
    # The median is now between spot and mark: within their (bp-sized) spread of the truth.
    lo, hi = np.minimum(spot, mark), np.maximum(spot, mark)
    assert ((bad.loc[WINDOW, "price"] >= lo) & (bad.loc[WINDOW, "price"] <= hi)).all()
    rel = (bad.loc[WINDOW, "price"] / good.loc[WINDOW, "price"] - 1).abs()
    assert rel.max() < 0.01
    assert bad.loc[WINDOW, "dev_perp"].min() > 0.45  # the bad source is recorded
    assert bad.loc[WINDOW, "confidence"].max() < 0.01  # and the hour is flagged
    # Outside the window nothing changed.
    outside = bad.index < pd.Timestamp("2021-05-19", tz="UTC")
    pd.testing.assert_frame_equal(bad[outside], good[outside])


def test_missing_and_frozen_sources_lower_confidence(btc: MarketHistory) -> None:
    spot = btc.spot["BTC"].drop(btc.spot["BTC"].loc["2021-05-10 00:00":"2021-05-10 05:00"].index)
    ref = reference_price(with_source(btc, "spot", spot), "BTC")
    gap = ref.loc["2021-05-10 00:00":"2021-05-10 05:00"]
    assert (gap["n_live"] == 2).all() and (gap["n_expected"] == 3).all()
    assert (gap["confidence"] <= 2 / 3 + 1e-12).all()
    np.testing.assert_allclose(
        gap["price"],
        (btc.perp["BTC"]["close"].loc[gap.index] + btc.mark["BTC"]["close"].loc[gap.index]) / 2,
    )
    # A mark feed stuck at one value for 8 hours is stale from its 3rd unchanged hour.
    mark = btc.mark["BTC"].copy()
    stuck = mark.loc["2021-05-12 00:00":"2021-05-12 07:00"].index
    mark.loc[stuck, ["open", "high", "low", "close"]] = mark.loc[stuck[0], "close"]
    frozen = reference_price(with_source(btc, "mark", mark), "BTC").loc[stuck]
    np.testing.assert_array_equal(frozen["live_mark"], [True, True, True] + [False] * 5)
    assert (frozen["confidence"].iloc[3:] <= 2 / 3 + 1e-12).all()


def test_single_source_confidence(btc: MarketHistory) -> None:
    spot_only = MarketHistory(
        spot=dict(btc.spot), perp={}, mark={}, funding={}, dvol={}, options={}
    )
    ref = reference_price(spot_only, "BTC")
    assert (ref["confidence"] == SINGLE_SOURCE).all()
    np.testing.assert_array_equal(ref["price"], btc.spot["BTC"]["close"])
