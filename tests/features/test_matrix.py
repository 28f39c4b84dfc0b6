"""The daily panel: layout, targets, HAR terms and the no-look-ahead property."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import FEATURE_COLUMNS, MarketHistory, build_daily_panel, load_market_history
from features.history import slice_time
from features.matrix import forward_sum, har_terms

TARGETS = ["target_rv_h1", "target_rv_h7"]


@pytest.fixture(scope="module")
def real_history(shared_data_dir: Path) -> MarketHistory:
    return load_market_history(shared_data_dir, ["BTC", "ETH", "SOL"], use_cache=False)


@pytest.fixture(scope="module")
def real_panel(real_history: MarketHistory) -> pd.DataFrame:
    return build_daily_panel(real_history)


def truncate(history: MarketHistory, cut: pd.Timestamp) -> MarketHistory:
    """The history as it was known at ``cut`` (every source cut at the same instant)."""

    def cut_all(source: dict[str, pd.DataFrame] | object) -> dict[str, pd.DataFrame]:
        assert isinstance(source, dict)
        return {k: slice_time(v, None, cut) for k, v in source.items()}

    return MarketHistory(
        spot=cut_all(history.spot),
        perp=cut_all(history.perp),
        mark=cut_all(history.mark),
        funding=cut_all(history.funding),
        dvol=cut_all(history.dvol),
        options=dict(history.options),
    )


def test_panel_layout(real_panel: pd.DataFrame) -> None:
    assert real_panel.index.names == ["symbol", "date"]
    assert list(real_panel.index.get_level_values("symbol").unique()) == ["BTC", "ETH", "SOL"]
    for column in (*FEATURE_COLUMNS, *TARGETS, "rv", "bipower", "rq", "n_hours", "incomplete"):
        assert column in real_panel.columns
    btc = real_panel.loc["BTC"]
    assert btc.index.tz is not None
    assert (btc.index == btc.index.normalize()).all()
    assert (np.diff(btc.index.asi8) == pd.Timedelta(days=1).value).all()  # calendar days
    # DVOL in decimal (BTC DVOL ranged ~30-160 %); none before its launch, none for SOL.
    assert btc["dvol"].dropna().between(0.2, 2.0).all()
    assert btc.loc[:"2021-03-23", "dvol"].isna().all()
    assert real_panel.loc["SOL", "dvol"].isna().all()
    # Funding: 3 prints a day summed, decimal per day (BTC prints are ~1e-4 per 8 h).
    assert btc["funding"].dropna().abs().median() == pytest.approx(3e-4, rel=0.5)


def test_realized_values_on_a_known_day(real_panel: pd.DataFrame) -> None:
    # FTX week: BTC hourly-RV volatility on 2022-11-09 was several times a calm day's.
    btc = real_panel.loc["BTC"]
    day = btc.loc["2022-11-09"]
    assert day["n_hours"] == 24
    assert day["low"] == 15588.0  # the FTX low in SOURCES.md
    calm = btc.loc["2023-08-12", "rv"]
    assert day["rv"] > 10 * calm


def test_targets_are_forward_sums(real_panel: pd.DataFrame) -> None:
    btc = real_panel.loc["BTC"]
    rv = btc["rv"].to_numpy()
    i = btc.index.get_loc(pd.Timestamp("2022-06-10", tz="UTC"))
    assert btc["target_rv_h1"].iloc[i] == pytest.approx(rv[i + 1])
    assert btc["target_rv_h7"].iloc[i] == pytest.approx(rv[i + 1 : i + 8].sum())
    assert btc["target_rv_h7"].iloc[-7:].isna().all()
    assert btc["target_rv_h1"].iloc[-1:].isna().all()
    assert not np.isnan(btc["target_rv_h7"].iloc[-8])


def test_forward_sum_and_har_terms_by_hand() -> None:
    s = pd.Series([1.0, 2.0, 3.0, np.nan, 5.0, 6.0])
    np.testing.assert_array_equal(forward_sum(s, 2), [5.0, np.nan, np.nan, 11.0, np.nan, np.nan])
    log_rv = pd.Series(np.arange(40, dtype=float))
    har = har_terms(log_rv)
    assert har["har_d"].iloc[35] == 35.0
    assert har["har_w"].iloc[35] == pytest.approx(np.mean(np.arange(29, 36)))
    assert har["har_m"].iloc[35] == pytest.approx(np.mean(np.arange(6, 36)))
    assert np.isnan(har["har_m"].iloc[19]) and not np.isnan(har["har_m"].iloc[20])


def test_leverage_and_lagged_return(real_panel: pd.DataFrame) -> None:
    eth = real_panel.loc["ETH"]
    np.testing.assert_array_equal(eth["ret_lag1"].iloc[1:], eth["ret"].iloc[:-1])
    assert (eth["leverage"].dropna() <= 0).all()
    neg = eth["ret"] < 0
    np.testing.assert_array_equal(eth.loc[neg, "leverage"], eth.loc[neg, "ret"])


@pytest.mark.parametrize("cut", ["2021-06-15T23:00:00Z", "2022-11-09T13:00:00Z"])
def test_no_feature_uses_data_after_its_date(
    real_history: MarketHistory, real_panel: pd.DataFrame, cut: str
) -> None:
    """Cutting the future off leaves every feature up to the cut unchanged."""
    cut_ts = pd.Timestamp(cut)
    past = build_daily_panel(truncate(real_history, cut_ts))
    last_full_day = cut_ts.normalize() - pd.Timedelta(days=0 if cut_ts.hour == 23 else 1)
    features = [c for c in real_panel.columns if not c.startswith("target_")]
    for symbol in ("BTC", "ETH", "SOL"):
        full = real_panel.loc[symbol].loc[:last_full_day, features]
        known = past.loc[symbol].loc[:last_full_day, features]
        pd.testing.assert_frame_equal(known, full, check_exact=True)
        # And the targets known at the cut are exactly the ones whose days are complete.
        h1 = past.loc[symbol].loc[: last_full_day - pd.Timedelta(days=1), "target_rv_h1"]
        pd.testing.assert_series_equal(
            h1, real_panel.loc[symbol].loc[h1.index, "target_rv_h1"], check_exact=True
        )
