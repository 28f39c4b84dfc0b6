"""HAR/HARQ on short histories and missing features: EWMA stand-ins with named warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.base import ewma_variance
from models.errors import FitFallbackWarning, VarianceFloorWarning
from models.har import HARForecaster, HARQForecaster


def _short_eth(panel: pd.DataFrame, rows: int) -> pd.DataFrame:
    """BTC in full, ETH only its last ``rows`` days (a recent listing)."""
    btc = panel.loc[["BTC"]]
    eth = panel.loc[["ETH"]].tail(rows)
    return pd.concat([btc, eth]).sort_index()


def _explicit_ewma(panel: pd.DataFrame, symbol: str, horizon: int) -> np.ndarray:
    ret = panel.xs(symbol, level="symbol")["ret"].to_numpy()
    return horizon * np.maximum(ewma_variance(ret), 1e-10)


@pytest.mark.parametrize("cls", [HARForecaster, HARQForecaster])
def test_a_symbol_too_short_for_one_horizon_is_forecast_by_ewma_with_named_warnings(
    cls: type[HARForecaster], sim_panel: pd.DataFrame
) -> None:
    # 125 days: 124 usable rows at h=1 (>= 120), 118 at h=7 (< 120).
    panel = _short_eth(sim_panel, 125)
    eth_dates = panel.xs("ETH", level="symbol").index
    last = eth_dates[-1].date()
    with pytest.warns(
        FitFallbackWarning,
        match=rf"{cls.name}: fit failed for ETH at {last} \(only 118 usable rows at h=7 "
        rf"\(min_obs=120; history from {eth_dates[0].date()}\)\); forecasting with EWMA",
    ):
        model = cls().fit(panel)
    assert set(model.regressors_) == {("BTC", 1), ("BTC", 7), ("ETH", 1)}
    assert list(model.unfitted_) == [("ETH", 7)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # From ETH's first day on (BTC's first weeks lack the 30-day HAR term).
        fc = model.forecast(panel, 7, start=eth_dates[0]).variance
    kinds = [w.category for w in caught]
    assert VarianceFloorWarning not in kinds  # planned stand-in, not a broken forecast
    assert kinds == [FitFallbackWarning]
    assert f"no h=7 fit for ETH (fit at {last}: only 118 usable rows" in str(caught[0].message)
    assert f"125 forecast(s) {eth_dates[0].date()}..{last} by EWMA" in str(caught[0].message)
    eth = fc.xs("ETH", level="symbol").to_numpy()
    np.testing.assert_array_equal(eth, _explicit_ewma(panel, "ETH", 7))

    # With a start date the EWMA still filters the whole history (same values, a suffix).
    start = eth_dates[100]
    with pytest.warns(FitFallbackWarning, match=rf"25 forecast\(s\) {start.date()}\.\.{last}"):
        later = model.forecast(panel, 7, start=start).variance
    np.testing.assert_array_equal(later.xs("ETH", level="symbol").to_numpy(), eth[100:])
    pd.testing.assert_series_equal(
        later.xs("BTC", level="symbol"), fc.xs("BTC", level="symbol")[lambda s: s.index >= start]
    )


def test_a_refit_with_too_few_rows_keeps_the_previous_fit(sim_panel: pd.DataFrame) -> None:
    model = HARForecaster().fit(sim_panel)
    before = dict(model.regressors_)
    short = sim_panel.groupby(level="symbol").head(60)
    with pytest.warns(FitFallbackWarning, match="kept the previous fit"):
        model.fit(short)
    assert model.regressors_ == before and model.unfitted_ == {}
    assert model.n_fallbacks_ == 4  # 2 symbols x 2 horizons
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stand-in needed, nothing to warn about
        fc = model.forecast(sim_panel, 1, start=pd.Timestamp("2021-03-01", tz="UTC")).variance
    assert np.isfinite(fc).all() and (fc > 0).all()


def test_a_missing_feature_day_is_replaced_and_the_warning_names_symbol_and_dates(
    sim_panel: pd.DataFrame,
) -> None:
    model = HARForecaster().fit(sim_panel)
    broken = sim_panel.copy()
    dates = broken.xs("ETH", level="symbol").index[[300, 301, 305]]
    broken.loc[[("ETH", d) for d in dates], "har_d"] = np.nan
    with pytest.warns(
        VarianceFloorWarning,
        match=rf"har: 3 h=1 forecast\(s\) not finite or not positive .*replaced by EWMA: "
        rf"ETH {dates[0].date()}\.\.{dates[1].date()}, {dates[2].date()}$",
    ):
        fc = model.forecast(broken, 1, start=pd.Timestamp("2021-03-01", tz="UTC")).variance
    eth = fc.xs("ETH", level="symbol")
    ewma = _explicit_ewma(broken, "ETH", 1)
    np.testing.assert_array_equal(eth.loc[dates].to_numpy(), ewma[[300, 301, 305]])


def test_sol_listing_gap_on_real_data_is_a_named_fallback_not_broken_forecasts(
    shared_data_dir: Path,
) -> None:
    """SOL trades from 2020-08-12: at a 2021-01-01 refit its h=7 HAR has 116 rows < 120."""
    from models.runner import load_panel

    panel = load_panel(shared_data_dir, ["BTC", "SOL"], pd.Timestamp("2021-01-31", tz="UTC"))
    dates = panel.index.get_level_values("date")
    cut = pd.Timestamp("2021-01-01", tz="UTC")
    with pytest.warns(
        FitFallbackWarning,
        match=r"har: fit failed for SOL at 2021-01-01 \(only 116 usable rows at h=7 "
        r"\(min_obs=120; history from 2020-08-12\)\)",
    ):
        model = HARForecaster().fit(panel[dates <= cut])
    view = panel[dates <= pd.Timestamp("2021-01-21", tz="UTC")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fc = model.forecast(view, 7, start=cut).variance
    assert [w.category for w in caught] == [FitFallbackWarning]
    assert "no h=7 fit for SOL" in str(caught[0].message)
    assert "21 forecast(s) 2021-01-01..2021-01-21 by EWMA" in str(caught[0].message)
    assert np.isfinite(fc).all() and (fc > 0).all()
