"""Walk-forward (out-of-sample) forecasting with scheduled refits.

Forecast origins run over every date of ``[start, end]``. They are cut into blocks of
``refit_every`` dates; at the first date of each block every model is refitted on the data
up to and including that date (expanding, or the last ``window`` days when rolling), and
the fitted parameters then filter the new data for the rest of the block. A forecast made
at the close of day t never uses data after t, so truncating the panel after any date
leaves every earlier forecast unchanged.
"""

from __future__ import annotations

import multiprocessing
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
from sklearn.base import clone

from models.base import BaseForecaster, Fallback, forward_variance, validate_panel
from models.combo import ComboForecaster, combine_forecasts
from models.errors import FitFallbackWarning, ModelInputError
from models.ewma import EWMAForecaster


@dataclass(frozen=True)
class WalkForwardConfig:
    """Schedule of a walk-forward run.

    Attributes
    ----------
    start, end : Timestamp
        First and last forecast origin (UTC dates, inclusive).
    refit_every : int
        Dates between refits (21 by default; parameters filter new data in between).
    horizons : tuple of int
        Forecast horizons in days.
    window : int or None
        Rolling training window in days; ``None`` trains on everything before the origin.
    """

    start: pd.Timestamp
    end: pd.Timestamp
    refit_every: int = 21
    horizons: tuple[int, ...] = (1, 7)
    window: int | None = None

    def __post_init__(self) -> None:
        if self.refit_every < 1:
            raise ModelInputError(f"refit_every must be at least 1 day, got {self.refit_every}.")
        if pd.Timestamp(self.end) < pd.Timestamp(self.start):
            raise ModelInputError(f"end {self.end} is before start {self.start}.")


@dataclass(frozen=True)
class WalkForwardResult:
    """Out-of-sample forecasts of every model.

    ``forecasts[(model, horizon)]`` is a Series of h-day variance (decimal) indexed by
    ``(symbol, date)``; ``fallbacks[model]`` lists failed fits; ``seconds[model]`` is the
    wall time spent; ``fitted[model]`` is the model as fitted at the last refit.
    """

    config: WalkForwardConfig
    forecasts: dict[tuple[str, int], pd.Series]
    fallbacks: dict[str, list[Fallback]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    fitted: dict[str, BaseForecaster] = field(default_factory=dict)

    @property
    def models(self) -> tuple[str, ...]:
        """Model names in the order they were given."""
        return tuple(dict.fromkeys(m for m, _ in self.forecasts))

    def frame(self) -> pd.DataFrame:
        """Tidy frame ``model, horizon, symbol, date, variance`` (decimal per horizon)."""
        parts = [
            s.rename("variance").reset_index().assign(model=m, horizon=h)
            for (m, h), s in self.forecasts.items()
        ]
        cols = ["model", "horizon", "symbol", "date", "variance"]
        return pd.concat(parts, ignore_index=True)[cols]


def refit_blocks(
    dates: pd.DatetimeIndex, config: WalkForwardConfig, refit_every: int | None = None
) -> list[pd.DatetimeIndex]:
    """Split the origins in ``[start, end]`` into blocks sharing one fit.

    Blocks are ``refit_every`` dates long (a model's own refit interval), or
    ``config.refit_every`` when it is ``None``.
    """
    origins = dates[(dates >= config.start) & (dates <= config.end)]
    if len(origins) == 0:
        raise ModelInputError(
            f"the panel has no dates between {pd.Timestamp(config.start).date()} "
            f"and {pd.Timestamp(config.end).date()}."
        )
    k = config.refit_every if refit_every is None else int(refit_every)
    if k < 1:
        raise ModelInputError(f"refit_every must be at least 1 day, got {k}.")
    return [origins[i : i + k] for i in range(0, len(origins), k)]


def model_refit_every(model: BaseForecaster) -> int | None:
    """A model's own refit interval in days (its ``refit_every`` hyper-parameter), if any."""
    value = model.get_params(deep=False).get("refit_every")
    return None if value is None else int(value)


def _for_horizons(model: BaseForecaster, horizons: tuple[int, ...]) -> BaseForecaster:
    """A clone that prepares exactly ``horizons`` (models with a ``horizons`` parameter).

    Each horizon is fitted independently, so restricting them changes no forecast; it only
    skips fits a run does not need (e.g. a run for h = 1 only).
    """
    model = clone(model)
    if "horizons" in model.get_params(deep=False):
        model.set_params(horizons=tuple(int(h) for h in horizons))
    return model


def process_pool(n_workers: int) -> ProcessPoolExecutor:
    """Worker processes that start with this process's modules already imported.

    Workers are forked where the platform allows it: a spawned worker imports pandas,
    scikit-learn, arch and LightGBM again before its first task (seconds of CPU each, far
    more when Python does not cache bytecode). Forking is safe here: the workers only
    compute (NumPy, arch, LightGBM, matplotlib) and LightGBM trains on one thread, so
    there is no OpenMP pool to inherit; the Prefect tasks run models with ``n_jobs=1``
    and never fork. Elsewhere the platform's default start method is used.
    """
    context = (
        multiprocessing.get_context("fork")
        if "fork" in multiprocessing.get_all_start_methods()
        else multiprocessing.get_context()
    )
    return ProcessPoolExecutor(max_workers=n_workers, mp_context=context)


def run_model(
    name: str, model: BaseForecaster, panel: pd.DataFrame, config: WalkForwardConfig
) -> tuple[dict[int, pd.Series], list[Fallback], float, BaseForecaster]:
    """Walk one (non-combination) model forward; see the module docstring.

    BLAS runs on one thread: a multi-threaded BLAS sums in a different order, which moves
    the optimizers' results in the last digits (and GARCH optima in the third), so
    forecasts would depend on the process (a pool worker gets fewer BLAS threads).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _run_model(name, model, panel, config)


def _run_model(
    name: str, model: BaseForecaster, panel: pd.DataFrame, config: WalkForwardConfig
) -> tuple[dict[int, pd.Series], list[Fallback], float, BaseForecaster]:
    t0 = time.perf_counter()
    date_level = panel.index.get_level_values("date")
    model = _for_horizons(model, config.horizons)
    blocks = refit_blocks(
        pd.DatetimeIndex(date_level.unique()).sort_values(), config, model_refit_every(model)
    )
    fitted = False
    fallbacks: list[Fallback] = []
    parts: dict[int, list[pd.Series]] = {h: [] for h in config.horizons}
    for block in blocks:
        first, last = block[0], block[-1]
        mask = date_level <= first
        if config.window is not None:
            mask &= date_level > first - pd.Timedelta(days=config.window)
        active: BaseForecaster = model
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FitFallbackWarning)
                model.fit(panel[mask])
            fallbacks.extend(model.fallbacks_)
            fitted = True
        except Exception as exc:  # any failure of one window must not stop the run
            action = "kept the previous fit" if fitted else "forecasting with EWMA"
            item = Fallback(name, "*", pd.Timestamp(first), f"{type(exc).__name__}: {exc}", action)
            fallbacks.append(item)
            warnings.warn(
                f"{name}: fit failed at {first.date()} ({item.reason}); {action}",
                FitFallbackWarning,
                stacklevel=2,
            )
            if not fitted:
                active = EWMAForecaster().fit(panel[mask])
        view = panel[date_level <= last]
        for h in config.horizons:
            parts[h].append(active.forecast(view, h, start=first).variance)
    forecasts = {h: pd.concat(p).sort_index() for h, p in parts.items()}
    return forecasts, fallbacks, time.perf_counter() - t0, model


def walk_forward(
    panel: pd.DataFrame,
    models: Mapping[str, BaseForecaster],
    config: WalkForwardConfig,
    n_jobs: int = 1,
) -> WalkForwardResult:
    """Out-of-sample forecasts of ``models`` over ``[config.start, config.end]``.

    Combination models (:class:`ComboForecaster`) are built from their members'
    out-of-sample forecasts (members missing from ``models`` are run too, but only the
    requested names are returned).

    Parameters
    ----------
    panel : DataFrame
        Daily panel (``features.matrix.build_daily_panel``) covering the training history
        before ``start`` and the evaluation dates.
    models : mapping name → forecaster
        Unfitted forecasters (they are cloned).
    config : WalkForwardConfig
        Schedule.
    n_jobs : int
        Models run in parallel processes when above 1.
    """
    from models.registry import make_model

    panel = validate_panel(panel)
    combos = {n: m for n, m in models.items() if isinstance(m, ComboForecaster)}
    base: dict[str, BaseForecaster] = {n: m for n, m in models.items() if n not in combos}
    for combo in combos.values():
        for member in combo.members:
            base.setdefault(member, make_model(member))
    names = list(base)
    if n_jobs > 1 and len(names) > 1:
        # Longest runs first, so the workers finish together; every model is run on its
        # own, so the results do not depend on the number of workers or their order.
        order = sorted(names, key=lambda n: -base[n].relative_cost)
        with process_pool(min(n_jobs, len(order))) as pool:
            futures = {n: pool.submit(run_model, n, base[n], panel, config) for n in order}
            runs = [futures[n].result() for n in names]
    else:
        runs = [run_model(n, base[n], panel, config) for n in names]
    forecasts: dict[tuple[str, int], pd.Series] = {}
    fallbacks: dict[str, list[Fallback]] = {}
    seconds: dict[str, float] = {}
    fitted: dict[str, BaseForecaster] = {}
    for n, (fc, fb, sec, mdl) in zip(names, runs, strict=True):
        for h, s in fc.items():
            forecasts[(n, h)] = s
        fallbacks[n], seconds[n], fitted[n] = fb, sec, mdl
    for n, combo in combos.items():
        t0 = time.perf_counter()
        for h in config.horizons:
            members = {m: forecasts[(m, h)] for m in combo.members}
            combined = combine_forecasts(
                members, forward_variance(panel, h), h, combo.window, combo.min_periods
            )
            forecasts[(n, h)] = combined.where(combined > 0, members[combo.members[0]])
        fitted[n] = combo.with_fitted_members(fitted)
        fallbacks[n] = [f for m in combo.members for f in fallbacks[m]]
        seconds[n] = time.perf_counter() - t0
    keep = [n for n in models]
    return WalkForwardResult(
        config=config,
        forecasts={k: v for k, v in forecasts.items() if k[0] in keep},
        fallbacks={n: fallbacks[n] for n in keep},
        seconds={n: seconds[n] for n in keep},
        fitted={n: fitted[n] for n in keep},
    )


def count_fallbacks(result: WalkForwardResult) -> dict[str, int]:
    """Number of failed fits per model."""
    return {m: len(v) for m, v in result.fallbacks.items()}


__all__ = [
    "WalkForwardConfig",
    "WalkForwardResult",
    "count_fallbacks",
    "model_refit_every",
    "process_pool",
    "refit_blocks",
    "run_model",
    "walk_forward",
]
