"""Forecaster contract, references (arch, explicit recursions) and bias correction."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks
from vol_sim import simulate_panel

from models.base import UNITS, VolForecast, ewma_variance, forward_variance
from models.errors import FitFallbackWarning, ModelInputError, UnknownModelError
from models.garch import EGARCHForecaster, GARCHForecaster, GJRForecaster, _pct_returns
from models.lgbm import LGBMForecaster
from models.logtarget import LogTargetRegressor
from models.registry import MODEL_NAMES, make_model

FAST = ("ewma", "ewma_asym", "garch", "gjr", "egarch", "har", "harq")


@parametrize_with_checks([LogTargetRegressor()])
def test_log_target_regressor_passes_sklearn_checks(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_params_roundtrip_and_clone(name: str) -> None:
    model = make_model(name)
    params = model.get_params()
    twin = clone(model)
    assert twin.get_params() == params and twin is not model
    key = next(iter(params))
    model.set_params(**{key: params[key]})
    assert model.get_params() == params


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        make_model("nope")


@pytest.mark.parametrize("name", FAST)
def test_forecasts_are_positive_finite_and_labelled(name: str, sim_panel: pd.DataFrame) -> None:
    model = make_model(name).fit(sim_panel)
    for h in (1, 7):
        fc = model.forecast(sim_panel, h)
        assert isinstance(fc, VolForecast) and fc.units == UNITS and fc.horizon == h
        assert fc.variance.index.equals(sim_panel.index)
        assert np.isfinite(fc.variance).all() and (fc.variance > 0).all()
        assert fc.origin == sim_panel.index.get_level_values("date").max()


def test_panel_without_the_contract_index_is_rejected(sim_panel: pd.DataFrame) -> None:
    with pytest.raises(ModelInputError, match=r"indexed by \(symbol, date\)"):
        make_model("ewma").fit(sim_panel.reset_index())


def test_ewma_matches_the_explicit_recursion() -> None:
    r = np.random.default_rng(0).normal(0, 0.02, 200)
    ref = np.empty_like(r)
    prev = np.mean(r[:30] ** 2)
    for t, x in enumerate(r):
        prev = 0.94 * prev + 0.06 * x * x
        ref[t] = prev
    np.testing.assert_allclose(ewma_variance(r, 0.94, 30), ref, rtol=1e-12)


@pytest.mark.parametrize("cls", [GARCHForecaster, GJRForecaster, EGARCHForecaster])
def test_garch_family_filter_matches_arch_fixed_forecasts(
    cls: type[GARCHForecaster], sim_panel: pd.DataFrame
) -> None:
    model = cls().fit(sim_panel)
    group = sim_panel.xs("BTC", level="symbol", drop_level=False)
    res = arch_model(
        _pct_returns(group), mean="Constant", vol=cls.vol, p=1, o=cls.o, q=1, dist="t"
    ).fix(model.params_["BTC"])
    start = group.index.get_level_values("date")[500]
    for h in (1, 7):
        mine = model.forecast(group, h, start=start).variance.to_numpy() * 1e4
        simulate = cls.vol == "EGARCH" and h > 1
        ref = (
            res.forecast(
                horizon=h,
                start=500,
                reindex=False,
                method="simulation" if simulate else "analytic",
                simulations=4000,
                random_state=np.random.RandomState(1),
            )
            .variance.sum(axis=1)
            .to_numpy()
        )
        # EGARCH h > 1: both resample standardized residuals (ours: the training window).
        np.testing.assert_allclose(mine, ref, rtol=0.06 if simulate else 1e-10)


def test_forward_variance_sums_the_next_h_days(sim_panel: pd.DataFrame) -> None:
    target = forward_variance(sim_panel, 7)
    np.testing.assert_allclose(target, sim_panel["target_rv_h7"], equal_nan=True)


def test_smearing_factor_estimated_on_holdout_corrects_lognormal_bias() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4000, 2))
    sigma = 0.8
    y = np.exp(-7 + X @ [0.5, -0.3] + rng.normal(0, sigma, 4000))
    reg = LogTargetRegressor(holdout_fraction=0.25).fit(X, y)
    assert reg.holdout_used_
    assert reg.smearing_ == pytest.approx(np.exp(sigma**2 / 2), rel=0.05)
    assert np.mean(y) / np.mean(reg.predict(X)) == pytest.approx(1.0, abs=0.05)


def test_har_bias_correction_makes_forecasts_unbiased_in_level() -> None:
    panel = simulate_panel(("BTC",), n_days=1500, seed=11)
    train = panel[panel.index.get_level_values("date") < pd.Timestamp("2024-01-01", tz="UTC")]
    model = make_model("har").fit(train)
    test_start = pd.Timestamp("2024-01-01", tz="UTC")
    fc = model.forecast(panel, 1, start=test_start).variance
    y = panel["target_rv_h1"].reindex(fc.index)
    ok = y.notna()
    assert (y[ok].mean() / fc[ok].mean()) == pytest.approx(1.0, abs=0.15)
    # exp(E[log y]) is below E[y] (Jensen): the held-out correction must raise forecasts.
    assert model.regressors_[("BTC", 1)].smearing_ > 1.0
    assert model.regressors_[("BTC", 1)].holdout_used_


def test_short_history_falls_back_to_ewma_with_a_named_warning(sim_panel: pd.DataFrame) -> None:
    short = sim_panel.groupby(level="symbol").head(60)
    model = GARCHForecaster()
    with pytest.warns(FitFallbackWarning, match=r"garch: fit failed for BTC at 2021-03-01"):
        model.fit(short)
    assert model.n_fallbacks_ == 2 and model.params_["BTC"] is None
    fc = model.forecast(short, 1).variance
    assert (fc > 0).all()


def test_failed_refit_keeps_previous_parameters(sim_panel: pd.DataFrame) -> None:
    model = GARCHForecaster().fit(sim_panel)
    before = dict(model.params_)
    short = sim_panel.groupby(level="symbol").head(60)
    with pytest.warns(FitFallbackWarning, match="kept the previous parameters"):
        model.fit(short)
    assert all(np.array_equal(model.params_[s], before[s]) for s in before)
    assert model.n_fallbacks_ == 2


def test_lgbm_is_deterministic(sim_panel: pd.DataFrame) -> None:
    def digest() -> str:
        model = LGBMForecaster(n_estimators=30).fit(sim_panel)
        values = model.forecast(sim_panel, 1).variance.to_numpy()
        return hashlib.sha256(values.tobytes()).hexdigest()

    assert digest() == digest()


def test_lgbm_unpooled_and_pooled_both_forecast(sim_panel: pd.DataFrame) -> None:
    for pooled in (True, False):
        fc = LGBMForecaster(n_estimators=20, pooled=pooled).fit(sim_panel).forecast(sim_panel, 7)
        assert np.isfinite(fc.variance).all() and (fc.variance > 0).all()


@pytest.mark.parametrize("cls", [GARCHForecaster, GJRForecaster, EGARCHForecaster])
def test_garch_family_fit_matches_arch_own_fit(
    cls: type[GARCHForecaster], sim_panel: pd.DataFrame
) -> None:
    """Exact constraint Jacobians speed the optimizer up without moving the optimum."""
    group = sim_panel.xs("ETH", level="symbol", drop_level=False)
    mine = cls(warm_start=False).fit(group).params_["ETH"]
    ref = (
        arch_model(_pct_returns(group), mean="Constant", vol=cls.vol, p=1, o=cls.o, q=1, dist="t")
        .fit(disp="off", show_warning=False)
        .params.to_numpy()
    )
    np.testing.assert_allclose(mine, ref, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("cls", [GARCHForecaster, GJRForecaster, EGARCHForecaster])
def test_warm_refit_skips_the_starting_value_grid_and_finds_the_same_parameters(
    cls: type[GARCHForecaster], sim_panel: pd.DataFrame
) -> None:
    """Skipping arch's volatility grid search on a warm start moves no parameter at all."""
    import warnings
    from unittest import mock

    from models.garch import _linear_constraints, _skip_volatility_grid

    group = sim_panel.xs("ETH", level="symbol", drop_level=False)
    dates = group.index.get_level_values("date")
    previous = cls(warm_start=False).fit(group[dates <= dates[400]]).params_["ETH"]
    assert previous is not None
    returns = _pct_returns(group[dates <= dates[500]])
    fits = []
    for skip in (False, True):
        model = arch_model(returns, mean="Constant", vol=cls.vol, p=1, o=cls.o, q=1, dist="t")
        grid = mock.patch.object(
            type(model.volatility),
            "starting_values",
            autospec=True,
            side_effect=type(model.volatility).starting_values,
        )
        if skip:
            _skip_volatility_grid(model, previous)
        with (
            grid as spy,
            warnings.catch_warnings(),
            mock.patch("arch.univariate.base.constraint", _linear_constraints),
        ):
            warnings.simplefilter("ignore")
            res = model.fit(disp="off", starting_values=previous, show_warning=False)
        assert spy.called is not skip
        fits.append(res.params.to_numpy())
    np.testing.assert_array_equal(fits[1], fits[0])
    assert not np.array_equal(fits[0], previous)  # the refit did move from the start


def test_linear_constraints_with_jacobians_equal_arch_constraints() -> None:
    from arch.univariate.base import constraint

    from models.garch import _linear_constraints

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=4)
    x = rng.normal(size=6)
    for ours, theirs, row in zip(_linear_constraints(a, b), constraint(a, b), a, strict=True):
        assert ours["type"] == theirs["type"] == "ineq"
        assert ours["fun"](x) == pytest.approx(theirs["fun"](x), rel=1e-12)
        np.testing.assert_array_equal(ours["jac"](x), row)


def test_least_squares_matches_sklearn_linear_regression() -> None:
    from sklearn.linear_model import LinearRegression

    from models.logtarget import LeastSquares

    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 4))
    y = X @ np.array([0.3, -1.0, 2.0, 0.1]) + 0.7 + rng.normal(size=400)
    ours, ref = LeastSquares().fit(X, y), LinearRegression().fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-10)
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-10)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-10)
