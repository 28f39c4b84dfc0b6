"""Walk-forward: no look-ahead, fallbacks, metric frame shape, selection before the window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.combo import ComboForecaster
from models.errors import FitFallbackWarning
from models.evaluation import METRIC_COLUMNS, evaluate
from models.har import HARForecaster
from models.registry import make_model
from models.walkforward import WalkForwardConfig, walk_forward

UTC = "UTC"


def _config(start: str, end: str, k: int = 30) -> WalkForwardConfig:
    return WalkForwardConfig(pd.Timestamp(start, tz=UTC), pd.Timestamp(end, tz=UTC), k)


def test_truncating_the_future_leaves_earlier_forecasts_unchanged(sim_panel: pd.DataFrame) -> None:
    models = {
        n: make_model(n, **({"n_estimators": 20} if n == "lgbm" else {}))
        for n in ("ewma", "gjr", "egarch", "harq", "lgbm")
    }
    models["combo"] = ComboForecaster(members=("gjr", "harq"))
    cfg = _config("2022-06-01", "2022-11-30")
    cut = pd.Timestamp("2022-09-15", tz=UTC)
    full = walk_forward(sim_panel, models, cfg)
    dates = sim_panel.index.get_level_values("date")
    short_panel = sim_panel[dates <= cut].copy()
    # Even the (forward-looking) target columns are cut: nothing after `cut` exists.
    short = walk_forward(short_panel, models, cfg)
    for key, series in short.forecasts.items():
        expected = full.forecasts[key]
        expected = expected[expected.index.get_level_values("date") <= cut]
        pd.testing.assert_series_equal(series, expected, check_names=False)


def test_a_failing_refit_falls_back_and_is_counted(
    sim_panel: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = HARForecaster._fit

    def flaky(self: HARForecaster, panel: pd.DataFrame) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise np.linalg.LinAlgError("singular design")
        original(self, panel)

    monkeypatch.setattr(HARForecaster, "_fit", flaky)
    cfg = _config("2022-06-01", "2022-08-31")
    with pytest.warns(FitFallbackWarning, match=r"har: fit failed at 2022-07-01"):
        res = walk_forward(sim_panel, {"har": HARForecaster()}, cfg)
    assert len(res.fallbacks["har"]) == 1
    assert res.fallbacks["har"][0].action == "kept the previous fit"
    for s in res.forecasts.values():
        assert np.isfinite(s).all() and (s > 0).all()


def test_evaluate_metrics_frame_and_selection_ignore_the_evaluation_window(
    sim_panel: pd.DataFrame,
) -> None:
    kwargs = {
        "models": ("ewma", "garch", "har"),
        "validation_days": 120,
        "refit_every": 60,
        "mcs_reps": 100,
    }
    res = evaluate(sim_panel, "2022-06-01", "2022-10-31", **kwargs)  # type: ignore[arg-type]
    m = res.metrics
    assert list(m.columns) == METRIC_COLUMNS
    assert set(m["symbol"]) == {"BTC", "ETH", "ALL"}
    assert len(m) == 3 * 3 * 2
    pooled = m[(m["symbol"] == "ALL") & (m["horizon"] == 1)].set_index("model")
    assert (
        pooled.loc["ewma", "n"]
        == m[(m["symbol"] != "ALL") & (m["horizon"] == 1) & (m["model"] == "ewma")]["n"].sum()
    )
    assert np.isnan(pooled.loc["garch", "dm_vs_garch_p"])
    assert 0 <= pooled.loc["har", "dm_vs_garch_p"] <= 1
    assert m["in_mcs"].dtype == bool

    # Wreck the realized variance inside the evaluation window: selection must not move.
    dates = sim_panel.index.get_level_values("date")
    inside = np.asarray(dates >= pd.Timestamp("2022-06-01", tz=UTC))
    noisy = sim_panel.copy()
    for col in ("target_rv_h1", "target_rv_h7"):
        noisy.loc[inside, col] = noisy.loc[inside, col].to_numpy()[::-1]
    res2 = evaluate(noisy, "2022-06-01", "2022-10-31", **kwargs)  # type: ignore[arg-type]
    for h in (1, 7):
        assert res2.selections[h].champion == res.selections[h].champion
        pd.testing.assert_series_equal(res2.selections[h].scores, res.selections[h].scores)
    assert res.selections[1].window_end < res.start


@pytest.mark.slow
def test_results_do_not_depend_on_the_number_of_worker_processes(
    sim_panel: pd.DataFrame,
) -> None:
    models = {
        "ewma": make_model("ewma"),
        "gjr": make_model("gjr"),
        "har": make_model("har"),
        "lgbm": make_model("lgbm", n_estimators=20),
        "combo": ComboForecaster(members=("gjr", "har")),
    }
    cfg = _config("2022-06-01", "2022-09-30")
    serial = walk_forward(sim_panel, models, cfg, n_jobs=1)
    pooled = walk_forward(sim_panel, models, cfg, n_jobs=2)
    assert list(pooled.forecasts) == list(serial.forecasts)
    for key, series in serial.forecasts.items():
        pd.testing.assert_series_equal(pooled.forecasts[key], series, check_exact=True)


def test_a_model_with_its_own_refit_interval_is_refitted_on_that_schedule(
    sim_panel: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.lgbm import LGBMForecaster

    fits: list[pd.Timestamp] = []
    original = LGBMForecaster._fit

    def counting(self: LGBMForecaster, panel: pd.DataFrame) -> None:
        fits.append(panel.index.get_level_values("date").max())
        original(self, panel)

    monkeypatch.setattr(LGBMForecaster, "_fit", counting)
    cfg = _config("2022-06-01", "2022-09-30", k=21)  # 122 origins
    res = walk_forward(sim_panel, {"lgbm": LGBMForecaster(n_estimators=10, refit_every=63)}, cfg)
    assert [d.date().isoformat() for d in fits] == ["2022-06-01", "2022-08-03"]
    assert res.fitted["lgbm"].get_params()["refit_every"] == 63
    fits.clear()
    walk_forward(sim_panel, {"lgbm": LGBMForecaster(n_estimators=10, refit_every=None)}, cfg)
    assert len(fits) == 6  # ceil(122 / 21): the schedule's interval


def test_a_single_horizon_run_fits_only_that_horizon_and_forecasts_the_same(
    sim_panel: pd.DataFrame,
) -> None:
    both = walk_forward(sim_panel, {"har": HARForecaster()}, _config("2022-06-01", "2022-08-31"))
    cfg = WalkForwardConfig(
        pd.Timestamp("2022-06-01", tz=UTC), pd.Timestamp("2022-08-31", tz=UTC), 30, (1,)
    )
    one = walk_forward(sim_panel, {"har": HARForecaster()}, cfg)
    assert {h for _, h in one.fitted["har"].regressors_} == {1}  # type: ignore[attr-defined]
    pd.testing.assert_series_equal(one.forecasts[("har", 1)], both.forecasts[("har", 1)])
