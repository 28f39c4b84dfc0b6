"""GARCH(1,1), GJR-GARCH(1,1) and EGARCH(1,1) with Student-t innovations via ``arch``.

Models are fitted per symbol on **percent** daily log returns (arch's scaling advice) and
converted back to decimal variance at the boundary. Between refits the fitted parameters
filter new data through arch's compiled variance recursion (the same numbers as
``arch_model(...).fix(params).forecast(start=...)``, without its per-call overhead).
EGARCH has no closed-form multi-step forecast: horizons above one day are simulated with
a fixed seed (common random numbers for every origin, so forecasts are reproducible and
unchanged when future data are added).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar, Literal
from unittest import mock

import numpy as np
import pandas as pd
from arch import arch_model

from models.base import BaseForecaster, ewma_variance

PCT2 = 1e4  # percent² → decimal²


def _linear_constraints(a: np.ndarray, b: np.ndarray) -> list[dict[str, Any]]:
    """arch's inequality constraints ``a @ params - b >= 0`` with their exact Jacobians.

    arch hands SLSQP one constraint function per row without a Jacobian, so SciPy
    differentiates each linear constraint numerically at every iteration (about a third
    of a fit's time). The constraints and the objective are unchanged; only the constant
    gradient ``a[i]`` is supplied instead of being approximated.
    """

    def factory(coeff: np.ndarray, val: float) -> tuple[Callable[..., float], Callable[..., Any]]:
        def fun(params: np.ndarray, *args: Any) -> float:
            return float(np.dot(coeff, params) - val)

        def jac(params: np.ndarray, *args: Any) -> np.ndarray:
            return coeff

        return fun, jac

    out: list[dict[str, Any]] = []
    for i in range(a.shape[0]):
        fun, jac = factory(np.array(a[i], dtype=float), float(b[i]))
        out.append({"type": "ineq", "fun": fun, "jac": jac})
    return out


def _skip_volatility_grid(model: Any, previous: np.ndarray) -> None:
    """Skip arch's grid search for volatility starting values when they are given.

    ``fit`` runs the volatility process's ``starting_values`` (a likelihood grid search,
    about 40 % of a warm-started fit) even when ``starting_values`` are passed; the grid's
    result then only feeds the distribution's bounds, which are constant for Student-t.
    Returning the given volatility parameters instead leaves the optimisation, and so the
    fitted parameters, unchanged (a test compares them bit for bit).
    """
    volatility = np.array(previous[1:-1], dtype=float)  # [mu, <volatility>, nu]
    model.volatility.starting_values = lambda resids: volatility.copy()


def _pct_returns(group: pd.DataFrame) -> pd.Series:
    """Percent log returns indexed by date; missing returns (listing day, outages) are 0."""
    r = group["ret"].astype(float).fillna(0.0) * 100.0
    return pd.Series(r.to_numpy(), index=group.index.get_level_values("date"), name="ret_pct")


class GARCHForecaster(BaseForecaster):
    """GARCH(1,1) with Student-t innovations and a constant mean (Bollerslev 1986, 1987).

    Parameters
    ----------
    warm_start : bool
        Start each refit from the previous fit's parameters (faster, and the parameters
        a failed fit falls back to).
    simulations : int
        Paths for simulated multi-step forecasts (EGARCH only).
    seed : int
        Seed of the simulation draws.

    Attributes
    ----------
    params_ : dict
        Per symbol, the fitted parameter vector (percent units) or ``None`` when the
        symbol has never been fitted successfully (it is then forecast by EWMA).
    """

    name = "garch"
    relative_cost = 10.0
    vol: ClassVar[Literal["GARCH", "EGARCH"]] = "GARCH"
    o: ClassVar[int] = 0
    min_obs: ClassVar[int] = 100

    def __init__(self, warm_start: bool = True, simulations: int = 500, seed: int = 0) -> None:
        self.warm_start = warm_start
        self.simulations = simulations
        self.seed = seed

    def _model(self, r: pd.Series) -> Any:
        return arch_model(r, mean="Constant", vol=self.vol, p=1, o=self.o, q=1, dist="t")

    def _fit(self, panel: pd.DataFrame) -> None:
        previous: dict[str, np.ndarray | None] = (
            dict(getattr(self, "params_", {})) if self.warm_start else {}
        )
        params: dict[str, np.ndarray | None] = {}
        resid_before = dict(getattr(self, "std_resid_", {}))
        std_resid: dict[str, np.ndarray] = {}
        for symbol, g in panel.groupby(level="symbol", sort=False):
            sym = str(symbol)
            last = g.index.get_level_values("date")[-1]
            prev = previous.get(sym)
            try:
                r = _pct_returns(g)
                if len(r) < self.min_obs:
                    raise ValueError(f"only {len(r)} observations")
                model = self._model(r)
                if prev is not None:
                    _skip_volatility_grid(model, prev)
                with (
                    warnings.catch_warnings(),
                    mock.patch("arch.univariate.base.constraint", _linear_constraints),
                ):
                    warnings.simplefilter("ignore")
                    res = model.fit(disp="off", starting_values=prev, show_warning=False)
                p = np.asarray(res.params, dtype=float)
                if res.convergence_flag != 0 or not np.all(np.isfinite(p)):
                    raise ValueError(f"optimizer flag {res.convergence_flag}")
                params[sym] = p
                std_resid[sym] = np.asarray(res.std_resid.dropna(), dtype=float)
            except (ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
                params[sym] = prev
                if sym in resid_before:
                    std_resid[sym] = resid_before[sym]
                action = (
                    "kept the previous parameters"
                    if prev is not None
                    else "forecasting with EWMA until a fit succeeds"
                )
                self._record_fallback(sym, last, str(exc), action)
        self.params_ = params
        self.std_resid_ = std_resid

    def _forecast(self, panel: pd.DataFrame, horizon: int, start: pd.Timestamp | None) -> pd.Series:
        parts: list[pd.Series] = []
        for symbol, g in panel.groupby(level="symbol", sort=False):
            dates = g.index.get_level_values("date")
            first = 0 if start is None else int(np.searchsorted(dates, start))
            if first >= len(g):
                continue
            p = self.params_.get(str(symbol))
            if p is None:
                values = horizon * ewma_variance(g["ret"].to_numpy())[first:]
            else:
                values = self._filter(_pct_returns(g), p, horizon, first, str(symbol)) / PCT2
            parts.append(pd.Series(values, index=g.index[first:]))
        if not parts:
            return pd.Series(dtype=float, index=panel.index[:0])
        return pd.concat(parts)

    def _process(self) -> Any:
        from arch.univariate import EGARCH, GARCH

        return EGARCH(p=1, o=self.o, q=1) if self.vol == "EGARCH" else GARCH(p=1, o=self.o, q=1)

    def _one_step(self, r: pd.Series, params: np.ndarray) -> np.ndarray:
        """Percent² variance of day t+1 at every origin t, with fixed parameters.

        Runs arch's own compiled variance recursion over the residuals plus one dummy
        residual, so element t is the forecast made at the close of day t. The recursion
        is causal (backcast and bounds use past residuals only).
        """
        process = self._process()
        resids = np.append(r.to_numpy(dtype=float) - params[0], 0.0)
        sigma2 = np.empty_like(resids)
        backcast = process.backcast(resids[:-1])
        bounds = process.variance_bounds(resids)
        process.compute_variance(params[1:-1], resids, sigma2, backcast, bounds)
        return sigma2[1:]

    def _filter(
        self, r: pd.Series, params: np.ndarray, horizon: int, first: int, symbol: str = ""
    ) -> np.ndarray:
        """Percent² h-day variance at each origin ``first …`` with fixed parameters.

        Multi-step GARCH/GJR forecasts follow ``E[s2(t+k)] = omega + phi E[s2(t+k-1)]`` with
        persistence ``phi = alpha + gamma / 2 + beta`` (symmetric innovations), which is
        arch's analytic forecast.
        """
        step = self._one_step(r, params)[first:]
        omega, alpha = params[1], params[2]
        gamma = params[3] if self.o else 0.0
        beta = params[3 + self.o]
        phi = alpha + 0.5 * gamma + beta
        total, current = step.copy(), step
        for _ in range(horizon - 1):  # horizon steps only; origins are vectorized
            current = omega + phi * current
            total += current
        return total


class GJRForecaster(GARCHForecaster):
    """GJR-GARCH(1,1,1) with Student-t innovations (Glosten, Jagannathan & Runkle 1993).

    The sign of the asymmetry is estimated, not imposed (crypto can show an inverse
    leverage effect).
    """

    name = "gjr"
    relative_cost = 12.0
    o = 1


class EGARCHForecaster(GARCHForecaster):
    r"""EGARCH(1,1,1) with Student-t innovations (Nelson 1991).

    :math:`\ln\sigma^2_t = \omega + \alpha(|e_{t-1}| - \sqrt{2/\pi}) + \gamma e_{t-1}
    + \beta\ln\sigma^2_{t-1}` as in ``arch``. One-day forecasts are analytic; longer
    horizons average ``simulations`` paths whose shocks are resampled (with a fixed seed,
    common to every origin) from the standardized residuals of the training window:
    filtered historical simulation, as arch's ``method="bootstrap"``. Student-t draws are
    unusable for the mean of the simulated variance because ``E[exp(alpha |e|)]`` is
    infinite under a Student-t, and the fitted tails here are very heavy (DOGE: nu ≈ 2.3).
    """

    name = "egarch"
    relative_cost = 12.0
    vol = "EGARCH"
    o = 1

    def _filter(
        self, r: pd.Series, params: np.ndarray, horizon: int, first: int, symbol: str = ""
    ) -> np.ndarray:
        one_day = self._one_step(r, params)[first:]
        if horizon == 1:
            return one_day
        _, omega, alpha, gamma, beta, nu = (float(x) for x in params)
        rng = np.random.default_rng(self.seed)
        pool = self.std_resid_.get(symbol)
        if pool is None or pool.size < 30:
            pool = rng.standard_t(nu, size=1000) * np.sqrt((nu - 2.0) / nu)
        shocks = rng.choice(pool, size=(self.simulations, horizon - 1), replace=True)
        log_var = np.repeat(np.log(one_day)[:, None], self.simulations, axis=1)
        total = one_day.copy()
        norm = np.sqrt(2.0 / np.pi)
        for k in range(horizon - 1):  # horizon steps only; origins and paths are vectorized
            e = shocks[:, k][None, :]
            log_var = omega + alpha * (np.abs(e) - norm) + gamma * e + beta * log_var
            total += np.exp(log_var).mean(axis=1)
        return total
