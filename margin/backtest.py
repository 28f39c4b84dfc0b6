"""Margin backtests: coverage tests, the Basel traffic light, procyclicality and the
walk-forward parameter backtest with champion selection.

Coverage tests (Kupiec 1995; Christoffersen 1998) take a boolean breach sequence in time order
and the expected breach probability ``p`` (0.01 for a 99% margin). Zero counts drop their terms
(``0 × ln 0 = 0``), as in MathWorks ``varbacktest``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import special, stats

from margin.apc import STRESS_WINDOWS, ApcConfig
from margin.apc import apply_path as apc_path
from margin.calibration import (
    forward_log_moves,
    stressed_scan,
    unconditional_scan,
    walk_forward_scan,
)

Zone = Literal["green", "yellow", "red"]

#: Columns of ``backtest_summary.csv``, in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model",
    "symbol",
    "level",
    "side",
    "n",
    "breaches",
    "breach_rate",
    "expected_rate",
    "kupiec_p",
    "christoffersen_ind_p",
    "christoffersen_cc_p",
    "zone",
    "avg_margin",
    "peak_to_trough",
    "max_increase_1d",
    "max_increase_5d",
    "max_increase_30d",
)


class TestResult(NamedTuple):
    """A likelihood-ratio statistic and its chi-square p-value."""

    stat: float
    pvalue: float


@dataclass(frozen=True)
class ChristoffersenResult:
    """Christoffersen (1998) independence and conditional-coverage tests.

    ``ind_stat`` ~ chi2(1), ``cc_stat = LR_POF + ind_stat`` ~ chi2(2). ``n00 … n11`` are the
    transition counts (no breach → no breach, …, breach → breach) over consecutive days.
    """

    ind_stat: float
    ind_pvalue: float
    cc_stat: float
    cc_pvalue: float
    n00: int
    n01: int
    n10: int
    n11: int


def _as_breaches(breaches: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    arr = np.asarray(breaches)
    if arr.ndim != 1:
        raise ValueError(f"breaches must be one-dimensional, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError("breaches must be booleans or 0/1 values")
        arr = arr.astype(bool)
    return arr


def _check_p(p: float) -> None:
    if not 0.0 < p < 1.0:
        raise ValueError(f"breach probability p must be in (0, 1), got {p}")


def _bernoulli_loglik(n_zero: float, n_one: float, prob: float) -> float:
    """``n_zero ln(1-prob) + n_one ln(prob)`` with ``0 ln 0 = 0``."""
    return float(special.xlogy(n_zero, 1.0 - prob) + special.xlogy(n_one, prob))


def _pof_stat(n: int, x: int, p: float) -> float:
    if n == 0:
        return 0.0
    stat = -2.0 * (_bernoulli_loglik(n - x, x, p) - _bernoulli_loglik(n - x, x, x / n))
    return max(stat, 0.0)


def kupiec_pof(breaches: npt.ArrayLike, p: float) -> TestResult:
    """Kupiec's proportion-of-failures test.

    Parameters
    ----------
    breaches : array-like of bool
        Breach indicator per observation.
    p : float
        Expected breach probability (decimal, 0.01 for 99% coverage).

    Returns
    -------
    TestResult
        ``LR_POF = -2 ln[(1-p)^(N-x) p^x] + 2 ln[(1-x/N)^(N-x) (x/N)^x]`` ~ chi2(1) and its
        p-value. With no observations the statistic is 0 and the p-value 1.
    """
    _check_p(p)
    arr = _as_breaches(breaches)
    stat = _pof_stat(arr.size, int(arr.sum()), p)
    return TestResult(stat, float(stats.chi2.sf(stat, 1)))


def christoffersen(breaches: npt.ArrayLike, p: float) -> ChristoffersenResult:
    """Christoffersen's independence and conditional-coverage tests.

    Parameters
    ----------
    breaches : array-like of bool
        Breach indicator per observation, in time order.
    p : float
        Expected breach probability (decimal).

    Returns
    -------
    ChristoffersenResult
        ``LR_CCI = -2 ln[(1-π)^(N00+N10) π^(N01+N11)]
        + 2 ln[(1-π01)^N00 π01^N01 (1-π11)^N10 π11^N11]`` ~ chi2(1) with
        ``π01 = N01/(N00+N01)``, ``π11 = N11/(N10+N11)``, ``π`` the pooled transition breach
        rate; ``LR_CC = LR_POF + LR_CCI`` ~ chi2(2), LR_POF over the whole sample.
    """
    _check_p(p)
    arr = _as_breaches(breaches)
    prev, curr = arr[:-1], arr[1:]
    n00 = int(np.sum(~prev & ~curr))
    n01 = int(np.sum(~prev & curr))
    n10 = int(np.sum(prev & ~curr))
    n11 = int(np.sum(prev & curr))
    total = n00 + n01 + n10 + n11
    if total == 0:
        ind = 0.0
    else:
        pi = (n01 + n11) / total
        pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
        pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
        restricted = _bernoulli_loglik(n00 + n10, n01 + n11, pi)
        unrestricted = _bernoulli_loglik(n00, n01, pi01) + _bernoulli_loglik(n10, n11, pi11)
        ind = max(-2.0 * (restricted - unrestricted), 0.0)
    cc = _pof_stat(arr.size, int(arr.sum()), p) + ind
    return ChristoffersenResult(
        ind_stat=ind,
        ind_pvalue=float(stats.chi2.sf(ind, 1)),
        cc_stat=cc,
        cc_pvalue=float(stats.chi2.sf(cc, 2)),
        n00=n00,
        n01=n01,
        n10=n10,
        n11=n11,
    )


def traffic_light(n_breaches: int, n: int, p: float) -> Zone:
    """Basel traffic-light zone from the binomial cumulative probability.

    Green when ``F(x; n, p) < 95%``, yellow when ``95% ≤ F < 99.99%``, red otherwise
    (BCBS 1996; for n = 250, p = 0.01: green 0–4, yellow 5–9, red ≥ 10 breaches).
    """
    _check_p(p)
    if n < 0 or not 0 <= n_breaches <= max(n, 0):
        raise ValueError(f"need 0 <= n_breaches <= n, got {n_breaches} of {n}")
    cdf = float(stats.binom.cdf(n_breaches, n, p))
    if cdf < 0.95:
        return "green"
    if cdf < 0.9999:
        return "yellow"
    return "red"


# --------------------------------------------------------------------------- procyclicality


def procyclicality(margin: pd.Series) -> dict[str, float]:
    """Procyclicality of a margin path (decimal fractions of notional, daily index).

    Returns ``peak_to_trough`` = max / min of the path, and ``max_increase_{n}d`` = the
    largest relative increase ``M_t / M_{t-n} - 1`` over ``n`` = 1, 5, 30 days (0 when the
    margin never rises; NaN when the path is too short).
    """
    m = margin.astype(float).dropna()
    m = m[m > 0]
    out = {"peak_to_trough": float(m.max() / m.min()) if len(m) else math.nan}
    for n in (1, 5, 30):
        if len(m) <= n:
            out[f"max_increase_{n}d"] = math.nan
            continue
        ratio = m.to_numpy()[n:] / m.to_numpy()[:-n]
        out[f"max_increase_{n}d"] = float(max(ratio.max() - 1.0, 0.0))
    return out


# --------------------------------------------------------------------------- walk-forward backtest

LEVELS: tuple[tuple[str, str], ...] = (
    ("IM", "long"),
    ("IM", "short"),
    ("MM", "long"),
    ("MM", "short"),
)
STATIC = "static"
CHAMPION = "champion"


class CoverageSettings(BaseModel):
    """What every backtest measures against: the horizon (days) and the IM / MM coverage
    (decimal confidences)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon_days: int = Field(1, ge=1, le=30)
    im_confidence: float = Field(0.99, gt=0.5, lt=1)
    mm_confidence: float = Field(0.975, gt=0.5, lt=1)


class BacktestConfig(CoverageSettings):
    """Walk-forward backtest settings (confidences decimal, horizon and windows in days)."""

    min_residuals: int = Field(250, ge=20)
    residual_lookback: int | None = Field(None, ge=20)
    min_scan_range: float = Field(0.002, gt=0, lt=0.5)
    validation_days: int = Field(730, ge=30)
    test_level: float = Field(0.05, gt=0, lt=1)
    apc: ApcConfig | None = None

    def confidence(self, level: str) -> float:
        """Coverage of a margin level (``"IM"`` or ``"MM"``)."""
        return self.im_confidence if level == "IM" else self.mm_confidence


def _symbol_frames(prices: pd.DataFrame, horizon: int) -> dict[str, pd.Series]:
    """h-day forward log moves per symbol over a gap-free daily index."""
    out = {}
    for symbol, frame in prices.groupby(level="symbol", sort=True):
        close = frame["close"].droplevel("symbol").astype(float)
        full = pd.date_range(close.index[0], close.index[-1], freq="D")
        out[str(symbol)] = forward_log_moves(close.reindex(full), horizon)
    return out


def dynamic_margins(moves: pd.Series, variance: pd.Series, config: BacktestConfig) -> pd.DataFrame:
    """Walk-forward scan ranges of one symbol: columns ``IM_long, IM_short, MM_long, MM_short``.

    Each date's margin uses forecasts and realized moves known at its close only; with
    ``config.apc`` the anti-procyclicality tools and bounded updates are applied in time order.
    """
    h = config.horizon_days
    cols: dict[str, pd.Series] = {}
    for level in ("IM", "MM"):
        scan = walk_forward_scan(
            moves,
            variance.reindex(moves.index),
            config.confidence(level),
            h,
            config.min_residuals,
            config.residual_lookback,
            config.min_scan_range,
        )
        cols[f"{level}_long"], cols[f"{level}_short"] = scan["long"], scan["short"]
    raw = pd.DataFrame(cols)
    if config.apc is None:
        return raw
    stressed, floor = {}, {}
    for level in ("IM", "MM"):
        c = config.confidence(level)
        s, f = stressed_scan(moves, c, h), unconditional_scan(moves, c, h)
        for side in ("long", "short"):
            stressed[f"{level}_{side}"], floor[f"{level}_{side}"] = s[side], f[side]
    published, _ = apc_path(raw, config.apc, pd.DataFrame(stressed), pd.DataFrame(floor))
    return published.where(raw.notna())


def static_margins(moves: pd.Series, before: pd.Timestamp, config: BacktestConfig) -> pd.Series:
    """Constant scan ranges at the configured coverage from moves fully known before ``before``.

    Returns a Series indexed ``IM_long, IM_short, MM_long, MM_short`` (decimal of price).
    """
    h = config.horizon_days
    known = moves[moves.index + pd.Timedelta(days=h) < before].dropna()
    if len(known) < 30:
        return pd.Series(np.nan, index=[f"{lv}_{sd}" for lv, sd in LEVELS])
    out = {}
    for level, side in LEVELS:
        lo, hi = np.quantile(
            known.to_numpy(), [1 - config.confidence(level), config.confidence(level)]
        )
        out[f"{level}_{side}"] = -math.expm1(lo) if side == "long" else math.expm1(hi)
    return pd.Series(out)


def breaches_of(moves: pd.Series, margin: pd.Series, side: str) -> pd.Series:
    """Boolean breaches where both are known: the move's loss exceeds the margin."""
    both = moves.notna() & margin.notna()
    m, k = moves[both], margin[both]
    loss = -np.expm1(m) if side == "long" else np.expm1(m)
    return pd.Series(loss.to_numpy() > k.to_numpy(), index=m.index)


def summary_row(
    model: str, symbol: str, level: str, side: str, moves: pd.Series, margin: pd.Series, p: float
) -> dict[str, object]:
    """One summary row (columns of :data:`SUMMARY_COLUMNS`) for a margin path."""
    hits = breaches_of(moves, margin, side)
    n, x = len(hits), int(hits.sum())
    row: dict[str, object] = {
        "model": model,
        "symbol": symbol,
        "level": level,
        "side": side,
        "n": n,
        "breaches": x,
        "expected_rate": p,
    }
    if n == 0:
        row.update(dict.fromkeys(SUMMARY_COLUMNS[6:], None))
        row["expected_rate"] = p
        return row
    cc = christoffersen(hits.to_numpy(), p)
    row.update(
        breach_rate=x / n,
        kupiec_p=kupiec_pof(hits.to_numpy(), p).pvalue,
        christoffersen_ind_p=cc.ind_pvalue,
        christoffersen_cc_p=cc.cc_pvalue,
        zone=traffic_light(x, n, p),
        avg_margin=float(margin[hits.index].mean()),
        **procyclicality(margin[hits.index]),
    )
    return row


def _window(series: pd.Series | pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> Any:
    return series[(series.index >= start) & (series.index <= end)]


def _rows(
    model: str,
    symbol: str,
    moves: pd.Series,
    margins: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    config: BacktestConfig,
) -> list[dict[str, object]]:
    mv = _window(moves, start, end)
    return [
        summary_row(
            model,
            symbol,
            level,
            side,
            mv,
            _window(margins[f"{level}_{side}"], start, end),
            1 - config.confidence(level),
        )
        for level, side in LEVELS
    ]


def _ts(value: object, tz: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    if tz is not None and ts.tzinfo is None:
        ts = ts.tz_localize(tz)  # type: ignore[arg-type]
    return ts


def select_champion(validation: pd.DataFrame, test_level: float = 0.05) -> tuple[str, str]:
    """Pick the champion from validation-window rows (never from the evaluation window).

    Rule: among models whose IM rows all pass Kupiec and Christoffersen (independence and
    conditional coverage) at ``test_level``, the lowest average IM; ties (to 1e-4) go to the
    lowest procyclicality (mean 5-day maximum increase, then peak-to-trough). If no model
    passes everywhere, the candidates are the models with the fewest failing IM rows.
    """
    rows = validation[(validation["level"] == "IM") & (validation["model"] != STATIC)]
    if rows.empty:
        raise ValueError("no model rows in the validation window to choose a champion from")
    pvals = rows[["kupiec_p", "christoffersen_ind_p", "christoffersen_cc_p"]].astype(float)
    fails = (pvals.fillna(0.0) < test_level).any(axis=1)
    table = pd.DataFrame(
        {
            "fails": fails.groupby(rows["model"]).sum(),
            "avg_im": rows.groupby("model")["avg_margin"].mean().round(4),
            "inc5": rows.groupby("model")["max_increase_5d"].mean(),
            "p2t": rows.groupby("model")["peak_to_trough"].mean(),
        }
    )
    table = table.sort_values(["fails", "avg_im", "inc5", "p2t"], kind="mergesort")
    best = table.iloc[0]
    name = str(table.index[0])
    passed = "passes" if best["fails"] == 0 else f"fails {int(best['fails'])} IM row(s), fewest"
    reason = (
        f"{name} {passed} Kupiec/Christoffersen at {test_level:.0%} on the validation window "
        f"with the lowest average IM {best['avg_im']:.4f}"
    )
    return name, reason


@dataclass(frozen=True)
class BacktestResult:
    """Walk-forward backtest output.

    ``summary`` has :data:`SUMMARY_COLUMNS` over the evaluation window (every model, ``static``
    and ``champion``); ``stress`` the same per stress window (extra first column ``window``);
    ``validation`` the rows the champion was chosen on; ``margins[(model, symbol)]`` the daily
    margin paths (decimal of price) and ``moves[symbol]`` the h-day log moves; the champion
    was chosen on ``validation_start`` … ``validation_end`` (inclusive margin dates).
    """

    summary: pd.DataFrame
    stress: pd.DataFrame
    validation: pd.DataFrame
    champion: str
    champion_reason: str
    margins: Mapping[tuple[str, str], pd.DataFrame]
    moves: Mapping[str, pd.Series]
    start: pd.Timestamp
    end: pd.Timestamp
    validation_start: pd.Timestamp
    validation_end: pd.Timestamp


def parameter_backtest(
    prices: pd.DataFrame,
    forecasts: Mapping[str, pd.Series],
    start: object,
    end: object,
    config: BacktestConfig | None = None,
    stress_windows: Mapping[str, tuple[str, str]] = STRESS_WINDOWS,
) -> BacktestResult:
    """Walk-forward backtest of margin parameters built from each model's forecasts.

    Parameters
    ----------
    prices : DataFrame
        Daily panel indexed by ``(symbol, date)`` with a ``close`` column.
    forecasts : mapping model name → Series
        h-day variance forecasts (decimal) indexed by ``(symbol, date)`` (``VolForecast.variance``)
        covering the validation window, the evaluation window, and ``min_residuals`` days before.
    start, end : date-like
        Evaluation window (inclusive). The champion is chosen on the ``validation_days`` before
        ``start``; the ``static`` baseline is calibrated on moves known before the window scored.
    """
    config = config or BacktestConfig()
    moves = _symbol_frames(prices, config.horizon_days)
    tz = next(iter(moves.values())).index.tz if moves else None
    t0, t1 = _ts(start, tz), _ts(end, tz)
    # Validation outcomes must all be realized before the evaluation window's first close.
    v0 = t0 - pd.Timedelta(days=config.validation_days)
    v1 = t0 - pd.Timedelta(days=config.horizon_days + 1)
    margins: dict[tuple[str, str], pd.DataFrame] = {}
    for model, variance in forecasts.items():
        for symbol, mv in moves.items():
            if symbol not in variance.index.get_level_values("symbol"):
                continue
            var = variance.xs(symbol, level="symbol").astype(float)
            margins[(model, symbol)] = dynamic_margins(mv, var, config)

    def static_path(mv: pd.Series, before: pd.Timestamp) -> pd.DataFrame:
        levels = static_margins(mv, before, config)
        return pd.DataFrame({k: pd.Series(v, index=mv.index) for k, v in levels.items()})

    evaluation, validation, stress = [], [], []
    for symbol, mv in moves.items():
        margins[(STATIC, symbol)] = static_path(mv, t0)
        evaluation += _rows(STATIC, symbol, mv, margins[(STATIC, symbol)], t0, t1, config)
        validation += _rows(STATIC, symbol, mv, static_path(mv, v0), v0, v1, config)
        for model in forecasts:
            if (model, symbol) in margins:
                path = margins[(model, symbol)]
                evaluation += _rows(model, symbol, mv, path, t0, t1, config)
                validation += _rows(model, symbol, mv, path, v0, v1, config)
    val = pd.DataFrame(validation, columns=list(SUMMARY_COLUMNS))
    champion, reason = select_champion(val, config.test_level)
    summary = pd.DataFrame(evaluation, columns=list(SUMMARY_COLUMNS))
    champ_rows = summary[summary["model"] == champion].assign(model=CHAMPION)
    summary = pd.concat([summary, champ_rows], ignore_index=True)

    for name, (first, last) in stress_windows.items():
        w0, w1 = _ts(first, tz), _ts(last, tz)
        for symbol, mv in moves.items():
            st_path = static_path(mv, w0)
            for row in _rows(STATIC, symbol, mv, st_path, w0, w1, config):
                stress.append({"window": name, **row})
            for model in (*forecasts, CHAMPION):
                key = (champion if model == CHAMPION else model, symbol)
                if key in margins:
                    for row in _rows(model, symbol, mv, margins[key], w0, w1, config):
                        stress.append({"window": name, **row})
    stress_frame = pd.DataFrame(stress, columns=["window", *SUMMARY_COLUMNS])
    stress_frame = stress_frame[stress_frame["n"] > 0].reset_index(drop=True)
    return BacktestResult(
        summary=summary,
        stress=stress_frame,
        validation=val,
        champion=champion,
        champion_reason=reason,
        margins=margins,
        moves=moves,
        start=t0,
        end=t1,
        validation_start=v0,
        validation_end=v1,
    )


def margin_vs_static_split(
    result: BacktestResult,
    variance: pd.Series,
    config: BacktestConfig | None = None,
    level: str = "IM",
) -> pd.DataFrame:
    """The champion's average margin over the static one's, split into volatility and tail shape.

    Per symbol and side, in units of ``sd``, the standard deviation of the h-day log moves the
    static baseline was calibrated on (known before the evaluation window):

    * ``vol_ratio`` — mean forecast σ̂_t over the scored dates / ``sd``;
    * ``model_quantile`` — mean |q_t| of the standardized-residual quantile behind the scan
      range (``q_{1-c}`` long, ``q_c`` short);
    * ``static_quantile`` — |static log-move quantile| / ``sd``;
    * ``shape_ratio`` — ``model_quantile / static_quantile``;
    * ``margin_vs_static`` — mean scan range / static scan range (≈ ``vol_ratio × shape_ratio``
      for small moves).

    Parameters
    ----------
    result : BacktestResult
        A backtest without anti-procyclicality (the raw filtered-historical-simulation path).
    variance : Series
        The champion's h-day variance forecasts (decimal), indexed by ``(symbol, date)``.
    config : BacktestConfig, optional
        The settings the backtest ran with.
    level : {"IM", "MM"}
        Margin level (its confidence).
    """
    config = config or BacktestConfig()
    c, h = config.confidence(level), config.horizon_days
    rows = []
    for symbol, moves in sorted(result.moves.items()):
        if symbol not in variance.index.get_level_values("symbol"):
            continue
        var = variance.xs(symbol, level="symbol").astype(float).reindex(moves.index)
        scan = walk_forward_scan(
            moves, var, c, h, config.min_residuals, config.residual_lookback, config.min_scan_range
        )
        known = moves[moves.index + pd.Timedelta(days=h) < result.start].dropna().to_numpy()
        if len(known) < 30:
            continue
        sd = float(known.std(ddof=1))
        static_lo, static_hi = np.quantile(known, [1 - c, c])
        window = _window(moves, result.start, result.end)
        for side, q, static_q in (("long", "q_low", static_lo), ("short", "q_high", static_hi)):
            margin = scan.loc[window.index, side]
            scored = window.notna() & margin.notna()
            if not scored.any():
                continue
            sigma = np.sqrt(var[scored.index[scored]]).mean()
            model_q = float(scan.loc[scored.index[scored], q].abs().mean())
            static_scan = -math.expm1(static_q) if side == "long" else math.expm1(static_q)
            rows.append(
                {
                    "symbol": symbol,
                    "side": side,
                    "vol_ratio": float(sigma) / sd,
                    "model_quantile": model_q,
                    "static_quantile": abs(float(static_q)) / sd,
                    "shape_ratio": model_q / (abs(float(static_q)) / sd),
                    "margin_vs_static": float(margin[scored].mean()) / static_scan,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "symbol",
            "side",
            "vol_ratio",
            "model_quantile",
            "static_quantile",
            "shape_ratio",
            "margin_vs_static",
        ],
    )


def backtest_metrics(summary: pd.DataFrame, model: str = CHAMPION) -> dict[str, float]:
    """Flat metrics of one model's summary rows, named for MLflow.

    Names: ``bt_<stat>_<SYMBOL>_<LEVEL>_<side>`` (the order of :func:`run_metrics`) for
    ``breach_rate``, ``kupiec_p``, ``christoffersen_cc_p``, ``avg_margin``,
    ``peak_to_trough`` and ``max_increase_5d`` (missing values are left out).
    """
    stats_ = (
        "breach_rate",
        "kupiec_p",
        "christoffersen_cc_p",
        "avg_margin",
        "peak_to_trough",
        "max_increase_5d",
    )
    out: dict[str, float] = {}
    for row in summary[summary["model"] == model].itertuples(index=False):
        for stat in stats_:
            value = getattr(row, stat)
            if value is not None and np.isfinite(value):
                out[f"bt_{stat}_{row.symbol}_{row.level}_{row.side}"] = float(value)
    return out


#: Per-row statistics of :func:`run_metrics`, named ``<stat>_<SYMBOL>_<LEVEL>_<side>``.
ROW_METRICS: tuple[str, ...] = (
    "n",
    "breaches",
    "breach_rate",
    "kupiec_p",
    "christoffersen_ind_p",
    "christoffersen_cc_p",
    "avg_margin",
    "peak_to_trough",
    "max_increase_1d",
    "max_increase_5d",
    "max_increase_30d",
)


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def run_metrics(
    summary: pd.DataFrame, model: str, test_level: float = 0.05, prefix: str = ""
) -> dict[str, float]:
    """Flat metrics of one model's backtest rows, one name per symbol, level and side.

    Parameters
    ----------
    summary : DataFrame
        Rows with :data:`SUMMARY_COLUMNS` (``BacktestResult.summary`` or ``.validation``).
    model : str
        Model whose rows to flatten (a forecaster, ``static`` or ``champion``).
    test_level : float
        Significance level of the pass counts (decimal, 0.05 = 5%).
    prefix : str
        Prepended to every name (``"val_"`` for validation-window rows).

    Returns
    -------
    dict of str → float
        ``<stat>_<SYMBOL>_<LEVEL>_<side>`` for every statistic of :data:`ROW_METRICS`
        (decimal rates and margins, e.g. ``breach_rate_BTC_IM_long``), ``zone_…`` coded
        0 green / 1 yellow / 2 red, ``avg_margin_vs_static_…`` (ratio to the ``static`` row of
        the same symbol, level and side, when present), and pooled over symbols and sides
        ``<stat>_ALL_<LEVEL>``: ``n``, ``breaches``, ``breach_rate`` (pooled),
        ``avg_margin``, ``peak_to_trough``, ``max_increase_5d`` (means), ``kupiec_pass`` and
        ``christoffersen_cc_pass`` (rows with p ≥ ``test_level``) and ``avg_margin_vs_static``
        (mean margin over the static one's). Missing or non-finite values are left out.
    """
    zones = {"green": 0.0, "yellow": 1.0, "red": 2.0}
    key = ["symbol", "level", "side"]
    rows = summary[summary["model"] == model]
    static = summary[summary["model"] == STATIC].set_index(key)["avg_margin"]
    out: dict[str, float] = {}
    for row in rows.to_dict("records"):
        suffix = f"{row['symbol']}_{row['level']}_{row['side']}"
        values = {stat: _finite(row[stat]) for stat in ROW_METRICS}
        values["zone"] = zones.get(str(row["zone"]))
        base = _finite(static.get((row["symbol"], row["level"], row["side"])))
        margin = values["avg_margin"]
        if base and margin is not None:
            values["avg_margin_vs_static"] = margin / base
        out.update({f"{prefix}{k}_{suffix}": v for k, v in values.items() if v is not None})
    for level, part in rows.groupby("level", sort=True):
        n, x = float(part["n"].sum()), float(part["breaches"].sum())
        pooled = {
            "n": n,
            "breaches": x,
            "breach_rate": x / n if n else math.nan,
            "avg_margin": float(part["avg_margin"].astype(float).mean()),
            "peak_to_trough": float(part["peak_to_trough"].astype(float).mean()),
            "max_increase_5d": float(part["max_increase_5d"].astype(float).mean()),
            "kupiec_pass": float((part["kupiec_p"].astype(float) >= test_level).sum()),
            "christoffersen_cc_pass": float(
                (part["christoffersen_cc_p"].astype(float) >= test_level).sum()
            ),
        }
        bases = static.reindex(pd.MultiIndex.from_frame(part[key])).to_numpy(float)
        if np.isfinite(bases).all() and bases.size:
            pooled["avg_margin_vs_static"] = pooled["avg_margin"] / float(bases.mean())
        out.update({f"{prefix}{k}_ALL_{level}": v for k, v in pooled.items() if math.isfinite(v)})
    return out
