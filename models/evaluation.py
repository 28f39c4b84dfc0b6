"""End-to-end out-of-sample evaluation: walk forward, score, compare, select.

:func:`evaluate` runs every model through the walk-forward schedule from the start of a
validation window (before ``start``) to ``end``, scores the forecasts made in
``[start, end]`` (QLIKE, MSE, Mincer-Zarnowitz R², Diebold-Mariano against GARCH(1,1)-t and
HAR, 90% Model Confidence Set) and picks champion and challenger per horizon on the
validation window only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.base import BaseForecaster, forward_variance, validate_panel
from models.comparison import diebold_mariano, model_confidence_set
from models.losses import mincer_zarnowitz_r2, mse_loss, qlike_loss
from models.registry import MODEL_NAMES, make_model
from models.selection import Selection, select_champion
from models.walkforward import WalkForwardConfig, WalkForwardResult, walk_forward

METRIC_COLUMNS = [
    "model",
    "symbol",
    "horizon",
    "n",
    "qlike",
    "mse",
    "dm_vs_garch_p",
    "dm_vs_har_p",
    "in_mcs",
]
POOLED = "ALL"


@dataclass(frozen=True)
class EvaluationResult:
    """Everything an evaluation produced.

    Attributes
    ----------
    metrics : DataFrame
        Exactly :data:`METRIC_COLUMNS`; one row per model, symbol (plus ``ALL``) and horizon.
    details : DataFrame
        ``metrics`` plus ``mz_r2``, ``dm_vs_garch_stat``, ``dm_vs_har_stat``,
        ``qlike_ratio_garch`` and ``qlike_ratio_har``.
    selections : dict horizon → Selection
        Champion/challenger chosen on the validation window.
    walk : WalkForwardResult
        The out-of-sample forecasts (validation and evaluation windows).
    realized : dict horizon → Series
        Realized h-day variance per (symbol, date).
    start, end, validation_start : Timestamp
        Evaluation window and the first validation date.
    """

    metrics: pd.DataFrame
    details: pd.DataFrame
    selections: dict[int, Selection]
    walk: WalkForwardResult
    realized: dict[int, pd.Series]
    start: pd.Timestamp
    end: pd.Timestamp
    validation_start: pd.Timestamp


def realized_variance(panel: pd.DataFrame, horizon: int) -> pd.Series:
    """Realized h-day variance: the panel's ``target_rv_h{h}`` column or ``sum rv[t+1..t+h]``."""
    column = f"target_rv_h{horizon}"
    if column in panel.columns:
        return panel[column].astype(float).rename(column)
    return forward_variance(panel, horizon)


def evaluate(
    panel: pd.DataFrame,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    models: Sequence[str] | Mapping[str, BaseForecaster] = MODEL_NAMES,
    validation_days: int = 365,
    refit_every: int = 21,
    horizons: tuple[int, ...] = (1, 7),
    window: int | None = None,
    n_jobs: int = 1,
    mcs_reps: int = 500,
    seed: int = 0,
) -> EvaluationResult:
    """Walk-forward evaluation of ``models`` over ``[start, end]`` (UTC dates, inclusive).

    Training always uses everything before each forecast date (expanding, or ``window``
    days when rolling); parameters are refitted every ``refit_every`` days. Champions are
    chosen on ``[start - validation_days, start)``.
    """
    panel = validate_panel(panel)
    start_ts, end_ts = _utc(start), _utc(end)
    validation_start = start_ts - pd.Timedelta(days=validation_days)
    estimators = (
        dict(models) if isinstance(models, Mapping) else {name: make_model(name) for name in models}
    )
    config = WalkForwardConfig(validation_start, end_ts, refit_every, tuple(horizons), window)
    walk = walk_forward(panel, estimators, config, n_jobs=n_jobs)
    realized = {h: realized_variance(panel, h) for h in horizons}
    details = score(walk.forecasts, realized, start_ts, end_ts, mcs_reps=mcs_reps, seed=seed)
    selections = {
        h: select_champion(
            walk.forecasts, realized[h], h, validation_start, start_ts - pd.Timedelta(days=1)
        )
        for h in horizons
    }
    return EvaluationResult(
        details[METRIC_COLUMNS].copy(),
        details,
        selections,
        walk,
        realized,
        start_ts,
        end_ts,
        validation_start,
    )


def score(
    forecasts: Mapping[tuple[str, int], pd.Series],
    realized: Mapping[int, pd.Series],
    start: pd.Timestamp,
    end: pd.Timestamp,
    mcs_size: float = 0.10,
    mcs_reps: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (model, symbol, horizon) and pooled losses, DM p-values and MCS membership.

    Only forecasts made in ``[start, end]`` whose realized variance is known count. The
    pooled (``ALL``) DM test and MCS use, per date, the mean loss across symbols.
    """
    rows: list[dict[str, object]] = []
    for h in sorted({h for _, h in forecasts}):
        names = [m for (m, hh) in forecasts if hh == h]
        F = pd.DataFrame({m: forecasts[(m, h)] for m in names}).sort_index()
        dates = F.index.get_level_values("date")
        F = F[(dates >= start) & (dates <= end)]
        y = realized[h].reindex(F.index)
        ok = np.isfinite(y.to_numpy()) & (y.to_numpy() > 0)
        F, y = F[ok], y[ok]
        q = pd.DataFrame({m: qlike_loss(y.to_numpy(), F[m].to_numpy()) for m in names}, F.index)
        e = pd.DataFrame({m: mse_loss(y.to_numpy(), F[m].to_numpy()) for m in names}, F.index)
        groups = [
            (
                str(s),
                q.xs(s, level="symbol"),
                e.xs(s, level="symbol"),
                F.xs(s, level="symbol"),
                y.xs(s, level="symbol"),
            )
            for s in q.index.unique(level="symbol")
        ]
        pooled_q = q.groupby(level="date").mean()
        groups.append((POOLED, pooled_q, e, F, y))
        for symbol, qs, es, fs, ys in groups:
            in_mcs = model_confidence_set(qs, size=mcs_size, reps=mcs_reps, seed=seed)
            for m in names:
                loss = q[m] if symbol == POOLED else qs[m]
                row: dict[str, object] = {
                    "model": m,
                    "symbol": symbol,
                    "horizon": h,
                    "n": int(loss.notna().sum()),
                    "qlike": float(loss.mean()),
                    "mse": float(es[m].mean()),
                    "mz_r2": mincer_zarnowitz_r2(ys.to_numpy(), fs[m].to_numpy()),
                    "in_mcs": bool(in_mcs[m]),
                }
                for bench in ("garch", "har"):
                    if bench in names and bench != m:
                        dm = diebold_mariano(qs[m], qs[bench], h)
                        row[f"dm_vs_{bench}_p"], row[f"dm_vs_{bench}_stat"] = (
                            dm.pvalue,
                            dm.statistic,
                        )
                        bench_loss = q[bench] if symbol == POOLED else qs[bench]
                        row[f"qlike_ratio_{bench}"] = float(loss.mean() / bench_loss.mean())
                    else:
                        row[f"dm_vs_{bench}_p"] = row[f"dm_vs_{bench}_stat"] = np.nan
                        row[f"qlike_ratio_{bench}"] = 1.0 if bench == m else np.nan
                rows.append(row)
    out = pd.DataFrame(rows)
    order = [
        *METRIC_COLUMNS,
        "mz_r2",
        "dm_vs_garch_stat",
        "dm_vs_har_stat",
        "qlike_ratio_garch",
        "qlike_ratio_har",
    ]
    return out[order]


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
