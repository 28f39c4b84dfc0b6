"""From volatility forecasts to margin parameters (filtered historical simulation).

For one underlying at the close of date ``t`` with forecast h-day variance ``σ̂²_t``:

* **scan ranges** — standardized residuals ``z_s = ln(S_{s+h}/S_s) / σ̂_s`` known by ``t``
  (``s + h ≤ t``) give per-side quantiles; the long side survives a down-move
  ``1 - exp(σ̂_t q_{1-c}(z))``, the short side an up-move ``exp(σ̂_t q_c(z)) - 1``, at
  ``c`` = IM (99%) or MM (97.5%) confidence;
* **vol shocks** — quantiles of h-day log changes of DVOL (decimal annualised implied vol);
  where no DVOL exists, of the 30-day realized vol scaled by the ratio of DVOL to realized-vol
  log-change dispersion measured where both exist (the *realized proxy*);
* **tail moves** — fixed extreme moves weighted by the linear-equivalent rule
  ``weight × |move| = L`` with ``L`` the larger IM scan range, so a linear position is charged
  exactly its IM scan range and only convex P&L beyond linear pays for the tails;
* **perp fractions** — IMF / MMF = the larger IM / MM scan range, plus a square-root size
  add-on ``k sqrt(N)`` with ``k = c × σ_1d / sqrt(ADV)`` (square-root market-impact law);
* **collateral haircuts** — the long scan range rescaled to the collateral's own liquidation
  horizon by the square root of time on the log scale;
* **correlations** — EWMA (λ = 0.94) and stressed (stress windows only) correlation of daily
  log returns, for cross-underlying offsets capped at 80% (EMIR Art. 27).

A missing or failed forecast falls back to the previous parameters, or, without them, to a
stated conservative default; the parameters say so in ``fallback``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from margin.apc import (
    STRESS_WINDOWS,
    ApcConfig,
    apply_pointwise,
    bounded_update,
    reference_level,
    stress_mask,
)
from margin.parameters import (
    ApcState,
    BoundEvent,
    CorrelationMatrix,
    Fallback,
    Haircut,
    Offsets,
    PerpMargin,
    RiskParameters,
    ScanRange,
    TailMove,
    VolShock,
)

FloatArray = npt.NDArray[np.float64]

#: Extreme moves of the tail scenarios (decimal; Paradex's BTC/ETH set).
DEFAULT_TAIL_MOVES: tuple[float, ...] = (-0.66, -0.33, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
DAYS_PER_YEAR = 365.0
MAX_SCAN_LONG = 0.99
MAX_SCAN_SHORT = 10.0
#: An h-day volatility forecast above this (decimal) is treated as a failed forecast.
MAX_SIGMA = 2.0


class CalibrationError(ValueError):
    """Inputs cannot produce parameters (too little history, bad values)."""


class CalibrationConfig(BaseModel):
    """Calibration settings; defaults: IM 99%, MM 97.5%, one-day horizon."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon_days: int = Field(1, ge=1, le=30)
    im_confidence: float = Field(0.99, gt=0.5, lt=1)
    mm_confidence: float = Field(0.975, gt=0.5, lt=1)
    min_residuals: int = Field(250, ge=20)
    residual_lookback: int | None = Field(None, ge=20)
    min_scan_range: float = Field(0.002, gt=0, lt=0.5)
    vol_shock_confidence: float = Field(0.99, gt=0.5, lt=1)
    realized_vol_window: int = Field(30, ge=5)
    min_vol_shock_up: float = Field(0.05, gt=0)
    min_vol_shock_down: float = Field(0.03, gt=0, lt=1)
    power_short_dte: float = Field(0.30, gt=0)
    power_long_dte: float = Field(0.13, gt=0)
    dte_floor_days: float = Field(1.0, gt=0)
    min_shocked_vol: float = Field(0.05, gt=0, lt=1)
    tail_moves: tuple[float, ...] = DEFAULT_TAIL_MOVES
    impact_coefficient: float = Field(1.0, gt=0)
    adv_window: int = Field(30, ge=1)
    default_adv: float = Field(1e6, gt=0)
    haircut_horizon_days: int = Field(2, ge=1)
    ewma_lambda: float = Field(0.94, gt=0, lt=1)
    offset_cap: float = Field(0.80, gt=0, le=1)
    default_scan_im: float = Field(0.50, gt=0, lt=1)
    default_scan_mm: float = Field(0.35, gt=0, lt=1)
    default_vol_shock_up: float = Field(1.0, gt=0)
    default_vol_shock_down: float = Field(0.5, gt=0, lt=1)


# --------------------------------------------------------------------------- scan ranges


def forward_log_moves(close: pd.Series, horizon: int) -> pd.Series:
    """``ln(S_{t+h} / S_t)`` stamped at ``t`` over a daily index (NaN where unknown)."""
    close = close.astype(float)
    return np.log(close.shift(-horizon) / close)


def standardized_residuals(moves: pd.Series, variance: pd.Series) -> pd.Series:
    """``moves / sqrt(variance)`` where both are finite and the variance positive."""
    var = variance.reindex(moves.index).astype(float)
    return moves / np.sqrt(var.where(var > 0))


def side_quantiles(z: npt.ArrayLike, confidence: float) -> tuple[float, float]:
    """Lower ``(1 - c)`` and upper ``c`` quantiles of the finite values of ``z``."""
    arr = np.asarray(z, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise CalibrationError("no finite residuals to take quantiles of")
    lo, hi = np.quantile(arr, [1.0 - confidence, confidence])
    return float(lo), float(hi)


def scan_from_log_quantiles(
    sigma: npt.ArrayLike, q_low: npt.ArrayLike, q_high: npt.ArrayLike, min_scan: float
) -> tuple[FloatArray, FloatArray]:
    """Long and short scan ranges (decimal of price) from σ̂ and residual quantiles.

    ``long = 1 - exp(σ̂ q_low)``, ``short = exp(σ̂ q_high) - 1``, both at least ``min_scan``
    (NaN stays NaN), and at most the file bounds ``MAX_SCAN_LONG`` / ``MAX_SCAN_SHORT``.
    """
    s = np.asarray(sigma, dtype=float)
    with np.errstate(over="ignore"):
        long = -np.expm1(s * np.asarray(q_low, dtype=float))
        short = np.expm1(s * np.asarray(q_high, dtype=float))
    # The file's bounds: a long range below 100%, a short range at most +1000%.
    long = np.minimum(long, MAX_SCAN_LONG)
    short = np.minimum(short, MAX_SCAN_SHORT)
    return _at_least(long, min_scan), _at_least(short, min_scan)


def _at_least(x: FloatArray, floor: float) -> FloatArray:
    return np.where(np.isnan(x), np.nan, np.maximum(x, floor))


def walk_forward_scan(
    moves: pd.Series,
    variance: pd.Series,
    confidence: float,
    horizon: int,
    min_residuals: int = 250,
    lookback: int | None = None,
    min_scan: float = 0.002,
) -> pd.DataFrame:
    """Scan ranges for every date of a daily series using only what is known at that date.

    Parameters
    ----------
    moves : Series
        h-day forward log moves of one underlying, daily ``DatetimeIndex`` without gaps.
    variance : Series
        h-day variance forecast (decimal) made at the close of each date.
    confidence : float
        Coverage per side (0.99 for IM).
    horizon : int
        h in days; the residual of date ``s`` is known from ``s + h`` on.
    min_residuals, lookback : int
        Residuals needed before a quantile is trusted; rolling window (``None``: expanding).

    Returns
    -------
    DataFrame
        Columns ``long``, ``short`` (decimal fractions of price), ``q_low``, ``q_high``; NaN
        where there is no forecast or too little history.
    """
    z = standardized_residuals(moves, variance).shift(horizon)
    roll = (
        z.expanding(min_periods=min_residuals)
        if lookback is None
        else z.rolling(lookback, min_periods=min(min_residuals, lookback))
    )
    q_low = roll.quantile(1.0 - confidence)
    q_high = roll.quantile(confidence)
    sigma = np.sqrt(variance.reindex(moves.index).astype(float).where(lambda v: v > 0))
    long, short = scan_from_log_quantiles(sigma, q_low, q_high, min_scan)
    return pd.DataFrame(
        {"long": long, "short": short, "q_low": q_low, "q_high": q_high}, index=moves.index
    )


def unconditional_scan(
    moves: pd.Series, confidence: float, horizon: int, min_obs: int = 250
) -> pd.DataFrame:
    """Per-side scan ranges from raw h-day moves known at each date (expanding window)."""
    known = moves.shift(horizon)
    roll = known.expanding(min_periods=min_obs)
    lo, hi = roll.quantile(1.0 - confidence), roll.quantile(confidence)
    return pd.DataFrame({"long": -np.expm1(lo), "short": np.expm1(hi)}, index=moves.index)


def stressed_scan(
    moves: pd.Series,
    confidence: float,
    horizon: int,
    windows: Mapping[str, tuple[str, str]] = STRESS_WINDOWS,
    min_obs: int = 20,
) -> pd.DataFrame:
    """Per-side scan ranges from raw moves inside stress windows known at each date."""
    mask = stress_mask(pd.DatetimeIndex(moves.index), windows)
    return unconditional_scan(moves.where(mask), confidence, horizon, min_obs)


# --------------------------------------------------------------------------- vol shocks


def vol_log_changes(vol: pd.Series, horizon: int) -> pd.Series:
    """h-day log changes of a (decimal, annualised) volatility series."""
    v = vol.astype(float).where(vol > 0)
    return np.log(v.shift(-horizon) / v)


def realized_vol(rv: pd.Series, window: int = 30) -> pd.Series:
    """Annualised decimal volatility from daily realized variance: ``sqrt(365 × mean(rv))``."""
    return np.sqrt(DAYS_PER_YEAR * rv.astype(float).rolling(window, min_periods=window).mean())


def proxy_scale(dvol: pd.Series, rv: pd.Series, horizon: int, window: int = 30) -> float:
    """Ratio of DVOL to realized-vol log-change dispersion (std) where both exist."""
    a = vol_log_changes(dvol, horizon)
    b = vol_log_changes(realized_vol(rv, window), horizon)
    both = a.notna() & b.notna()
    if both.sum() < 30:
        raise CalibrationError("fewer than 30 days with both DVOL and realized vol")
    return float(a[both].std() / b[both].std())


def vol_shocks(
    changes: pd.Series, confidence: float, min_up: float, min_down: float
) -> tuple[float, float]:
    """Relative vol shocks (decimal) from log changes.

    Up ``exp(q_c) - 1``, down ``1 - exp(q_{1-c})``, bounded below by ``min_up`` / ``min_down``.
    """
    lo, hi = side_quantiles(changes.to_numpy(float), confidence)
    up = max(math.expm1(hi), min_up)
    down = min(max(-math.expm1(lo), min_down), 0.95)
    return up, down


def calibrate_vol_shock(
    config: CalibrationConfig,
    dvol: pd.Series | None = None,
    rv: pd.Series | None = None,
    scale: float = 1.0,
) -> VolShock:
    """Vol shocks from DVOL when it has history, else from the scaled realized-vol proxy."""
    h = config.horizon_days
    common = {
        "power_short_dte": config.power_short_dte,
        "power_long_dte": config.power_long_dte,
        "dte_floor_days": config.dte_floor_days,
        "min_shocked_vol": config.min_shocked_vol,
    }
    bounds = (config.vol_shock_confidence, config.min_vol_shock_up, config.min_vol_shock_down)
    if dvol is not None and vol_log_changes(dvol, h).notna().sum() >= 60:
        up, down = vol_shocks(vol_log_changes(dvol, h), *bounds)
        return VolShock(up=up, down=down, source="dvol", **common)
    if rv is not None:
        changes = scale * vol_log_changes(realized_vol(rv, config.realized_vol_window), h)
        if changes.notna().sum() >= 60:
            up, down = vol_shocks(changes, *bounds)
            return VolShock(up=up, down=down, source="realized_proxy", **common)
    return VolShock(
        up=config.default_vol_shock_up,
        down=config.default_vol_shock_down,
        source="default",
        **common,
    )


# --------------------------------------------------------------------------- tails, perps, haircuts


def tail_weights(moves: Sequence[float], linear_equivalent: float) -> tuple[TailMove, ...]:
    """Tail scenarios with ``weight = min(1, L / |move|)`` (linear-equivalent rule)."""
    if not linear_equivalent > 0:
        raise CalibrationError(f"linear-equivalent move must be positive, got {linear_equivalent}")
    return tuple(
        TailMove(move=m, weight=min(1.0, linear_equivalent / abs(m))) for m in sorted(moves)
    )


def perp_margin(
    scan_im: ScanRange,
    scan_mm: ScanRange,
    sigma_1d: float,
    adv_quote: float,
    impact_coefficient: float = 1.0,
) -> PerpMargin:
    """Perp IMF/MMF (at most 1) and the square-root size add-on coefficient.

    ``size_addon = c × σ_1d / sqrt(ADV)`` so the add-on for notional ``N`` is
    ``c σ_1d sqrt(N / ADV)``, the square-root market-impact cost of closing ``N``.
    """
    if not (adv_quote > 0 and sigma_1d > 0):
        raise CalibrationError("ADV and one-day sigma must be positive")
    # A fraction of 1 is a fully collateralised position; beyond it margin buys nothing.
    return PerpMargin(
        imf=min(max(scan_im.long, scan_im.short), 1.0),
        mmf=min(max(scan_mm.long, scan_mm.short), 1.0),
        size_addon=impact_coefficient * sigma_1d / math.sqrt(adv_quote),
    )


def haircut(
    scan_im: ScanRange, scan_mm: ScanRange, horizon: int, collateral_horizon: int
) -> Haircut:
    """Collateral haircut at its own horizon: ``1 - (1 - long)^sqrt(h_c / h)``."""
    k = math.sqrt(collateral_horizon / horizon)
    return Haircut(
        im=-math.expm1(k * math.log1p(-scan_im.long)),
        mm=-math.expm1(k * math.log1p(-scan_mm.long)),
        horizon_days=collateral_horizon,
    )


def average_daily_volume(turnover: pd.Series, window: int, default: float) -> float:
    """Median daily quote turnover over the last ``window`` days (``default`` if unknown)."""
    recent = turnover.astype(float).dropna().tail(window)
    recent = recent[recent > 0]
    return float(recent.median()) if len(recent) else default


# --------------------------------------------------------------------------- correlations


def _clean_corr(matrix: FloatArray) -> FloatArray:
    m = np.clip((matrix + matrix.T) / 2.0, -1.0, 1.0)
    np.fill_diagonal(m, 1.0)
    return m


def ewma_correlation(returns: pd.DataFrame, lam: float = 0.94) -> FloatArray:
    """EWMA correlation of daily log returns (rows where every symbol has a return)."""
    r = returns.dropna().to_numpy(float)
    if r.shape[0] < 2:
        raise CalibrationError("fewer than two days with returns for every symbol")
    w = (1 - lam) * lam ** np.arange(r.shape[0] - 1, -1, -1, dtype=float)
    cov = (r * w[:, None]).T @ r / w.sum()
    sd = np.sqrt(np.diag(cov))
    if not (sd > 0).all():
        raise CalibrationError("a symbol has zero EWMA variance")
    return _clean_corr(cov / np.outer(sd, sd))


def stressed_correlation(
    returns: pd.DataFrame,
    windows: Mapping[str, tuple[str, str]] = STRESS_WINDOWS,
    min_days: int = 20,
) -> FloatArray:
    """Correlation over stress-window days (all days when fewer than ``min_days``)."""
    full = returns.dropna()
    stressed = full[stress_mask(pd.DatetimeIndex(full.index), windows)]
    use = stressed if len(stressed) >= min_days else full
    if len(use) < 2:
        raise CalibrationError("fewer than two days with returns for every symbol")
    return _clean_corr(np.corrcoef(use.to_numpy(float), rowvar=False))


def calibrate_offsets(returns: pd.DataFrame, config: CalibrationConfig) -> Offsets:
    """EWMA and stressed correlation matrices over the columns of ``returns``."""
    symbols = tuple(str(c) for c in returns.columns)

    def as_model(m: FloatArray) -> CorrelationMatrix:
        return CorrelationMatrix(
            symbols=symbols, values=tuple(tuple(float(x) for x in row) for row in m)
        )

    return Offsets(
        ewma=as_model(ewma_correlation(returns, config.ewma_lambda)),
        stressed=as_model(stressed_correlation(returns)),
        ewma_lambda=config.ewma_lambda,
        offset_cap=config.offset_cap,
    )


# --------------------------------------------------------------------------- one underlying


@dataclass(frozen=True)
class UnderlyingInputs:
    """What calibration needs for one underlying, all up to the as-of date.

    ``daily`` is the underlying's slice of the daily panel (``close``, ``rv``, optional
    ``dvol`` decimal and ``log_volume`` = ln quote turnover), indexed by date; ``variance`` the
    model's h-day variance forecasts over the same dates (the last one is used, the rest give
    the standardized residuals).
    """

    symbol: str
    daily: pd.DataFrame
    variance: pd.Series | None
    model: str
    proxy_scale: float = 1.0


def _levels(scan_im: ScanRange, scan_mm: ScanRange) -> FloatArray:
    return np.array([scan_im.long, scan_im.short, scan_mm.long, scan_mm.short])


_LEVEL_FIELDS = ("scan_im.long", "scan_im.short", "scan_mm.long", "scan_mm.short")


def _apc(
    raw: FloatArray,
    moves: pd.Series,
    previous: RiskParameters | None,
    apc: ApcConfig,
    config: CalibrationConfig,
    reference: FloatArray | None,
) -> tuple[FloatArray, ApcState]:
    h = config.horizon_days
    confs = (config.im_confidence, config.mm_confidence)
    stressed = np.concatenate([stressed_scan(moves, c, h).iloc[-1].to_numpy(float) for c in confs])
    floor = np.concatenate(
        [unconditional_scan(moves, c, h).iloc[-1].to_numpy(float) for c in confs]
    )
    res = apply_pointwise(raw, apc, stressed, floor, reference)
    prev = None if previous is None else _levels(previous.scan_im, previous.scan_mm)
    out, capped = bounded_update(res.margin, prev, apc.max_decrease)
    events: list[BoundEvent] = []
    for i, name in enumerate(_LEVEL_FIELDS):
        for rule in ("stress_weight", "floor", "buffer", "buffer_release"):
            if res.bit[rule][i]:
                events.append(
                    BoundEvent(
                        rule=rule, field=name, raw=float(raw[i]), bounded=float(res.margin[i])
                    )
                )
        if capped[i]:
            events.append(
                BoundEvent(
                    rule="decrease_cap", field=name, raw=float(res.margin[i]), bounded=float(out[i])
                )
            )
    state = ApcState(
        buffer=apc.buffer,
        buffer_rate=apc.buffer_rate,
        buffer_released=float(np.max(res.buffer_released)) if apc.buffer else 0.0,
        stress_weight=apc.stress_weight,
        stress_weight_share=apc.stress_weight_share,
        floor=apc.floor,
        floor_lookback_days=int(moves.notna().sum()),
        max_decrease=apc.max_decrease if apc.max_decrease is not None else 1.0,
        bounds_bit=tuple(events),
    )
    return out, state


def calibrate_underlying(
    inputs: UnderlyingInputs,
    as_of: dt.date,
    config: CalibrationConfig | None = None,
    apc: ApcConfig | None = None,
    previous: RiskParameters | None = None,
    reference: FloatArray | None = None,
) -> RiskParameters:
    """Parameters of one underlying at the close of ``as_of`` (data after it are ignored).

    A missing, non-finite or non-positive forecast (or too little residual history) falls
    back to ``previous`` re-stamped at ``as_of``, or without it to the conservative defaults
    of ``config``; ``fallback`` records which and why.
    """
    config = config or CalibrationConfig()
    apc = apc or ApcConfig()
    h = config.horizon_days
    cutoff = pd.Timestamp(as_of)
    daily = inputs.daily
    if isinstance(daily.index, pd.DatetimeIndex) and daily.index.tz is not None:
        cutoff = cutoff.tz_localize(daily.index.tz)
    daily = daily[daily.index <= cutoff]
    if daily.empty:
        raise CalibrationError(f"{inputs.symbol}: no data up to {as_of}")
    full_index = pd.date_range(daily.index[0], daily.index[-1], freq="D")
    daily = daily.reindex(full_index)
    # Moves ending after the as-of date are unknown at its close.
    moves = forward_log_moves(daily["close"], h)
    variance = None if inputs.variance is None else inputs.variance.reindex(full_index)

    reason = _forecast_problem(variance, full_index[-1], moves, config)
    if reason is not None:
        return _fallback(inputs, as_of, config, apc, previous, daily, reason)

    assert variance is not None
    sigma = math.sqrt(float(variance.iloc[-1]))
    z = standardized_residuals(moves, variance)
    levels = []
    for conf in (config.im_confidence, config.mm_confidence):
        window = z.dropna()
        if config.residual_lookback is not None:
            window = window.tail(config.residual_lookback)
        lo, hi = side_quantiles(window.to_numpy(float), conf)
        long, short = scan_from_log_quantiles(sigma, lo, hi, config.min_scan_range)
        levels += [float(long), float(short)]
    raw = np.array(levels)
    # MM never above IM (empirical quantiles are monotone, rounding guard only).
    raw[2:] = np.minimum(raw[2:], raw[:2])
    if reference is None and apc.buffer:
        reference = _buffer_reference(moves, variance, apc, config)
    published, state = _apc(raw, moves, previous, apc, config, reference)
    return _assemble(inputs, as_of, config, published, sigma, state, Fallback(), daily)


def _buffer_reference(
    moves: pd.Series, variance: pd.Series, apc: ApcConfig, config: CalibrationConfig
) -> FloatArray:
    """Calm reference of the buffer: median of the pre-buffer margins of the previous days.

    The same walk-forward margins the backtest scores (scan ranges, then stress weight and
    floor), so a published file and its backtest agree.
    """
    h = config.horizon_days
    raw, stressed, floor = [], [], []
    for conf in (config.im_confidence, config.mm_confidence):
        scan = walk_forward_scan(
            moves,
            variance,
            conf,
            h,
            config.min_residuals,
            config.residual_lookback,
            config.min_scan_range,
        )
        st, fl = stressed_scan(moves, conf, h), unconditional_scan(moves, conf, h)
        for side in ("long", "short"):
            raw.append(scan[side])
            stressed.append(st[side])
            floor.append(fl[side])

    def stack(parts: list[pd.Series]) -> FloatArray:
        return np.column_stack([p.to_numpy(float) for p in parts])

    pre = apply_pointwise(
        stack(raw), apc.model_copy(update={"buffer": False}), stack(stressed), stack(floor)
    )
    path = pd.DataFrame(pre.margin, index=moves.index)
    return reference_level(path, apc.buffer_reference_days).iloc[-1].to_numpy(float)


def _forecast_problem(
    variance: pd.Series | None, last: pd.Timestamp, moves: pd.Series, config: CalibrationConfig
) -> str | None:
    if variance is None:
        return "no forecast for this underlying"
    value = variance.get(last)
    if value is None or not np.isfinite(value) or value <= 0:
        return f"forecast for {last.date()} is missing or not positive"
    if math.sqrt(value) > MAX_SIGMA:
        return f"forecast volatility {math.sqrt(value):.3g} for {last.date()} is implausible"
    n = int(standardized_residuals(moves, variance).notna().sum())
    if n < config.min_residuals:
        return f"only {n} standardized residuals (need {config.min_residuals})"
    return None


def _fallback(
    inputs: UnderlyingInputs,
    as_of: dt.date,
    config: CalibrationConfig,
    apc: ApcConfig,
    previous: RiskParameters | None,
    daily: pd.DataFrame,
    reason: str,
) -> RiskParameters:
    if previous is not None:
        return previous.model_copy(
            update={
                "as_of": as_of,
                "fallback": Fallback(used=True, source="previous", reason=reason),
                "apc": previous.apc.model_copy(update={"bounds_bit": ()}),
            }
        )
    im, mm = config.default_scan_im, config.default_scan_mm
    levels = np.array([im, im, mm, mm])
    sigma = im / 3.0  # a stated default: the IM range is a three-sigma move
    state = ApcState(
        buffer=apc.buffer,
        stress_weight=apc.stress_weight,
        floor=apc.floor,
        max_decrease=apc.max_decrease if apc.max_decrease is not None else 1.0,
    )
    fb = Fallback(used=True, source="default", reason=reason)
    return _assemble(inputs, as_of, config, levels, sigma, state, fb, daily, model="default")


def _assemble(
    inputs: UnderlyingInputs,
    as_of: dt.date,
    config: CalibrationConfig,
    levels: FloatArray,
    sigma: float,
    state: ApcState,
    fallback: Fallback,
    daily: pd.DataFrame,
    model: str | None = None,
) -> RiskParameters:
    # Buffers can push a level past the file bounds; MM never above IM.
    im_long, im_short = min(levels[0], MAX_SCAN_LONG), min(levels[1], MAX_SCAN_SHORT)
    scan_im = ScanRange(long=float(im_long), short=float(im_short))
    scan_mm = ScanRange(long=float(min(levels[2], im_long)), short=float(min(levels[3], im_short)))
    h = config.horizon_days
    dvol = daily.get("dvol")
    rv = daily.get("rv")
    turnover = np.exp(daily["log_volume"]) if "log_volume" in daily else pd.Series(dtype=float)
    adv = average_daily_volume(turnover, config.adv_window, config.default_adv)
    return RiskParameters(
        underlying=inputs.symbol,
        as_of=as_of,
        horizon_days=h,
        im_confidence=config.im_confidence,
        mm_confidence=config.mm_confidence,
        sigma=sigma,
        model=model or inputs.model,
        scan_im=scan_im,
        scan_mm=scan_mm,
        vol_shock=calibrate_vol_shock(config, dvol, rv, inputs.proxy_scale),
        tails=tail_weights(config.tail_moves, max(scan_im.long, scan_im.short)),
        perp=perp_margin(scan_im, scan_mm, sigma / math.sqrt(h), adv, config.impact_coefficient),
        haircut=haircut(scan_im, scan_mm, h, config.haircut_horizon_days),
        apc=state,
        fallback=fallback,
    )
