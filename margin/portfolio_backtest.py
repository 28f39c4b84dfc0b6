"""Portfolio backtest through the engine: margin at t against the realized P&L to t + h.

Five portfolios, re-opened every date ``t`` (options rolled at a fixed tenor):

* ``basis`` — long 1 coin spot, short 1 perpetual of the basis underlying (BTC);
* ``pair`` — long 1 BTC perpetual, short ``S_BTC / S_ETH`` ETH perpetuals (dollar neutral);
* ``short_strangle`` — short 1 call and 1 put at log-moneyness ``±strangle_width``,
  delta-hedged with the option underlying's perpetual at t;
* ``long_straddle`` — long 1 call and 1 put at the money;
* ``covered_call`` — long 1 coin spot, short 1 call at log-moneyness ``+call_moneyness``.

Options (option underlying ETH, USD-settled European, Black-76 on the spot index, rate 0) have
``tenor_days`` to expiry at t. Implied vol is DVOL (decimal) as the at-the-money level times the
**skew shape** of a real option snapshot: ``vol(k) = DVOL x r(k)`` with ``k = ln(K / F)`` and
``r(k) = iv(k) / iv(0)`` from the snapshot expiry closest to the tenor (out-of-the-money quotes,
linear interpolation in k, flat beyond the quoted strikes; sticky moneyness, so at t + h the
same strike is priced at ``DVOL_{t+h} x r(ln(K / S_{t+h}))``). The shape is held fixed over
time: one snapshot is all the real option data there is.

Margin at t uses only data up to t: the walk-forward IM scan ranges per side (the
calibrated parameter path of :func:`margin.backtest.dynamic_margins`), vol shocks from the
quantiles of DVOL log changes known at t, the linear-equivalent tail weights of
:mod:`margin.calibration`, and the stressed BTC/ETH correlation known at t (stress-window days,
all days while fewer than 20) with the 80% offset cap. The grid is built by
:func:`margin.bridge.scan_grid`, the same translation the published files go through. All
dates are margined by the engine in blocks of ``block_days``: one book per block whose accounts
are the (portfolio, date) pairs, with one underlying per (symbol, date) so each date keeps its
own prices, grids and correlation. MM is scanned on the MM scan ranges per side (the bridge's
``mm_scenarios``); no figure of a date depends on another date.

Realized P&L: full revaluation of every position at t + h with the realized spot, perpetual
and DVOL. A **breach** is a loss larger than the margin at t; the statistics are those of
:mod:`margin.backtest` (Kupiec, Christoffersen, Basel traffic light).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import Field

from margin.apc import STRESS_WINDOWS, stress_mask
from margin.backtest import CoverageSettings, christoffersen, kupiec_pof, traffic_light
from margin.bridge import scan_grid
from margin.calibration import DEFAULT_TAIL_MOVES, CalibrationConfig, tail_weights, vol_log_changes
from margin.methodology import AddOnConfig, Methodology, OffsetConfig
from margin.parameters import TailMove, VolShock
from margin.pricing import black76_greeks, black76_price
from margin.typing import FloatArray

if TYPE_CHECKING:
    from features.history import MarketHistory

__all__ = [
    "PORTFOLIOS",
    "PORTFOLIO_COLUMNS",
    "PortfolioBacktestConfig",
    "PortfolioBacktestResult",
    "SkewShape",
    "daily_market",
    "load_snapshot_skew",
    "portfolio_backtest",
    "realized_pnl",
    "skew_from_snapshot",
    "vol_shock_path",
]

PORTFOLIOS: tuple[str, ...] = (
    "basis",
    "pair",
    "short_strangle",
    "long_straddle",
    "covered_call",
)

#: Columns of ``portfolio_backtest.csv``, in order.
PORTFOLIO_COLUMNS: tuple[str, ...] = (
    "portfolio",
    "level",
    "n",
    "breaches",
    "breach_rate",
    "expected_rate",
    "kupiec_p",
    "christoffersen_ind_p",
    "christoffersen_cc_p",
    "zone",
    "avg_margin_usd",
    "avg_margin_frac",
    "max_loss_to_margin",
)

DAYS_PER_YEAR = 365.0


class PortfolioBacktestConfig(CoverageSettings):
    """Portfolio backtest settings (moneyness as decimal log-moneyness, tenor in days)."""

    tenor_days: float = Field(30.0, gt=1)
    strangle_width: float = Field(0.10, gt=0, lt=1)
    call_moneyness: float = Field(0.10, ge=0, lt=1)
    basis_underlying: str = "BTC"
    pair: tuple[str, str] = ("BTC", "ETH")
    option_underlying: str = "ETH"
    vol_shock_min_obs: int = Field(60, ge=10)
    correlation_min_days: int = Field(20, ge=2)
    block_days: int = Field(32, ge=1, description="dates per engine book (bounds the offsets)")
    addons: AddOnConfig = AddOnConfig()
    calibration: CalibrationConfig = CalibrationConfig()

    @property
    def symbols(self) -> tuple[str, ...]:
        """Underlyings the portfolios trade, in book order."""
        names = (self.basis_underlying, *self.pair, self.option_underlying)
        return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SkewShape:
    """Implied-vol ratio to at the money by log-moneyness ``k = ln(K / F)``."""

    log_moneyness: FloatArray
    ratio: FloatArray
    source: str = ""

    def __call__(self, k: FloatArray) -> FloatArray:
        """``r(k)``, linear in k inside the quoted range and flat outside."""
        return np.asarray(np.interp(k, self.log_moneyness, self.ratio))

    @classmethod
    def flat(cls) -> SkewShape:
        """No skew (``r = 1``)."""
        return cls(np.array([-1.0, 1.0]), np.ones(2), "flat")


def skew_from_snapshot(
    chain: pd.DataFrame, tenor_days: float = 30.0, source: str = "snapshot"
) -> SkewShape:
    """The skew shape of the snapshot expiry closest to ``tenor_days``.

    Parameters
    ----------
    chain : DataFrame
        Deribit option chain with ``creation_timestamp`` (epoch ms), ``expire_date``
        (``26JAN24``), ``strike_price``, ``option_type`` (``C``/``P``), ``underlying_price``
        (the expiry's forward, USD) and ``mark_iv_b76_derived`` (percent).

    Returns
    -------
    SkewShape
        Out-of-the-money quotes (puts below the forward, calls above), ratio to the vol
        interpolated at ``k = 0``.
    """
    need = {"creation_timestamp", "expire_date", "strike_price", "option_type"}
    need |= {"underlying_price", "mark_iv_b76_derived"}
    missing = need - set(chain.columns)
    if missing:
        raise ValueError(f"option snapshot lacks column(s) {', '.join(sorted(missing))}")
    taken = pd.to_datetime(chain["creation_timestamp"], unit="ms", utc=True)
    expiry = pd.to_datetime(chain["expire_date"], format="%d%b%y", utc=True) + pd.Timedelta(hours=8)
    days = (expiry - taken).dt.total_seconds() / 86_400.0
    nearest = int((days - tenor_days).abs().to_numpy().argmin())
    target = float(days.iloc[nearest])
    rows = chain[chain["expire_date"] == chain["expire_date"].iloc[nearest]]
    k = np.log(rows["strike_price"].astype(float) / rows["underlying_price"].astype(float))
    iv = rows["mark_iv_b76_derived"].astype(float) / 100.0
    otm = ((rows["option_type"] == "P") & (k <= 0)) | ((rows["option_type"] == "C") & (k >= 0))
    ok = otm & np.isfinite(iv) & (iv > 0)
    frame = pd.DataFrame({"k": k[ok], "iv": iv[ok]}).groupby("k")["iv"].mean().sort_index()
    if len(frame) < 3:
        raise ValueError(f"option snapshot has fewer than 3 usable quotes near {tenor_days} days")
    ks, ivs = frame.index.to_numpy(float), frame.to_numpy(float)
    atm = float(np.interp(0.0, ks, ivs))
    label = f"{source} expiry {rows['expire_date'].iloc[0]} ({target:.1f} days)"
    return SkewShape(ks, ivs / atm, label)


def daily_market(history: MarketHistory, symbols: tuple[str, ...]) -> pd.DataFrame:
    """Daily closes per symbol: ``<S>_spot``, ``<S>_perp`` (USD) and ``<S>_dvol`` (decimal).

    The close of UTC day d is the last hourly close of that day; DVOL is published in
    percent and divided by 100.
    """
    cols: dict[str, pd.Series] = {}
    for s in symbols:
        for kind, table in (("spot", history.spot), ("perp", history.perp)):
            if s not in table:
                raise ValueError(f"no {kind} history for {s}")
            cols[f"{s}_{kind}"] = table[s]["close"].resample("1D").last()
        if s in history.dvol:
            cols[f"{s}_dvol"] = history.dvol[s]["close"].resample("1D").last() / 100.0
    frame = pd.DataFrame(cols).astype(float)
    for s in symbols:
        if f"{s}_dvol" not in frame:
            frame[f"{s}_dvol"] = np.nan
    return frame


def vol_shock_path(dvol: pd.Series, config: PortfolioBacktestConfig) -> pd.DataFrame:
    """Relative vol shocks ``up``, ``down`` per date from DVOL log changes known at that date.

    Same rule as :func:`margin.calibration.vol_shocks` on an expanding window (at least
    ``vol_shock_min_obs`` changes; before that the calibration's stated defaults).
    """
    cal = config.calibration
    h, c = config.horizon_days, cal.vol_shock_confidence
    known = vol_log_changes(dvol, h).shift(h)
    roll = known.expanding(min_periods=config.vol_shock_min_obs)
    up = np.maximum(np.expm1(roll.quantile(c)), cal.min_vol_shock_up)
    down = np.minimum(np.maximum(-np.expm1(roll.quantile(1 - c)), cal.min_vol_shock_down), 0.95)
    return pd.DataFrame(
        {
            "up": up.fillna(cal.default_vol_shock_up),
            "down": down.fillna(cal.default_vol_shock_down),
        }
    )


def stressed_correlation_path(returns: pd.DataFrame, min_days: int = 20) -> pd.Series:
    """Correlation of the two columns of ``returns`` over stress-window days known at each
    date (all days known while fewer than ``min_days`` stress days), like
    :func:`margin.calibration.stressed_correlation`."""
    a, b = (returns.iloc[:, j] for j in range(2))
    mask = pd.Series(stress_mask(pd.DatetimeIndex(returns.index), STRESS_WINDOWS), returns.index)
    both = a.notna() & b.notna()
    sa, sb = a.where(mask & both), b.where(mask & both)
    stressed = sa.expanding(min_periods=min_days).corr(sb)
    count = (mask & both).cumsum()
    full = a.where(both).expanding(min_periods=2).corr(b.where(both))
    out = stressed.where(count >= min_days, full)
    return out.clip(-1.0, 1.0)


# --------------------------------------------------------------------------- instruments


@dataclass(frozen=True)
class _Leg:
    name: str
    kind: str  # spot, linear_perp, option
    symbol: str
    call: bool = False
    moneyness: float = 0.0


def _legs(config: PortfolioBacktestConfig) -> tuple[_Leg, ...]:
    out = [_Leg(f"{s}-SPOT", "spot", s) for s in config.symbols]
    out += [_Leg(f"{s}-PERP", "linear_perp", s) for s in config.symbols]
    o, w, m = config.option_underlying, config.strangle_width, config.call_moneyness
    out += [
        _Leg(f"{o}-C-ATM", "option", o, True, 0.0),
        _Leg(f"{o}-P-ATM", "option", o, False, 0.0),
        _Leg(f"{o}-C-UP", "option", o, True, w),
        _Leg(f"{o}-P-DN", "option", o, False, -w),
        _Leg(f"{o}-C-CC", "option", o, True, m),
    ]
    return tuple(out)


@dataclass(frozen=True)
class _Priced:
    """Per leg and date: value at t and t + h, strike, vol at t, delta at t (arrays)."""

    value0: dict[str, FloatArray]
    value1: dict[str, FloatArray]
    strike: dict[str, FloatArray]
    vol0: dict[str, FloatArray]
    delta0: dict[str, FloatArray]


def _price_legs(
    legs: tuple[_Leg, ...],
    now: pd.DataFrame,
    later: pd.DataFrame,
    skew: SkewShape,
    config: PortfolioBacktestConfig,
) -> _Priced:
    t0 = config.tenor_days / DAYS_PER_YEAR
    t1 = max(config.tenor_days - config.horizon_days, 0.0) / DAYS_PER_YEAR
    v0, v1, strikes, vols, deltas = {}, {}, {}, {}, {}
    for leg in legs:
        s0 = now[f"{leg.symbol}_spot"].to_numpy(float)
        s1 = later[f"{leg.symbol}_spot"].to_numpy(float)
        if leg.kind == "spot":
            v0[leg.name], v1[leg.name] = s0, s1
            deltas[leg.name] = np.ones_like(s0)
        elif leg.kind == "linear_perp":
            v0[leg.name] = now[f"{leg.symbol}_perp"].to_numpy(float)
            v1[leg.name] = later[f"{leg.symbol}_perp"].to_numpy(float)
            deltas[leg.name] = np.ones_like(s0)
        else:
            d0 = now[f"{leg.symbol}_dvol"].to_numpy(float)
            d1 = later[f"{leg.symbol}_dvol"].to_numpy(float)
            k = s0 * math.exp(leg.moneyness)
            vol0 = d0 * skew(np.full_like(s0, leg.moneyness))
            vol1 = d1 * skew(np.log(k / s1))
            v0[leg.name] = black76_price(s0, k, t0, vol0, 0.0, leg.call)
            v1[leg.name] = black76_price(s1, k, t1, vol1, 0.0, leg.call)
            strikes[leg.name], vols[leg.name] = k, vol0
            deltas[leg.name] = black76_greeks(s0, k, t0, vol0, 0.0, leg.call).delta
    return _Priced(v0, v1, strikes, vols, deltas)


def _quantities(
    priced: _Priced, now: pd.DataFrame, config: PortfolioBacktestConfig
) -> dict[str, dict[str, FloatArray]]:
    """Signed contracts per portfolio and leg, per date."""
    n = len(now)
    one = np.ones(n)
    b, (p1, p2), o = config.basis_underlying, config.pair, config.option_underlying
    ratio = now[f"{p1}_spot"].to_numpy(float) / now[f"{p2}_spot"].to_numpy(float)
    d = priced.delta0
    hedge = d[f"{o}-C-UP"] + d[f"{o}-P-DN"]
    return {
        "basis": {f"{b}-SPOT": one, f"{b}-PERP": -one},
        "pair": {f"{p1}-PERP": one, f"{p2}-PERP": -ratio},
        "short_strangle": {f"{o}-C-UP": -one, f"{o}-P-DN": -one, f"{o}-PERP": hedge},
        "long_straddle": {f"{o}-C-ATM": one, f"{o}-P-ATM": one},
        "covered_call": {f"{o}-SPOT": one, f"{o}-C-CC": -one},
    }


def realized_pnl(
    quantities: Mapping[str, FloatArray],
    value0: Mapping[str, FloatArray],
    value1: Mapping[str, FloatArray],
) -> FloatArray:
    """USD P&L by full revaluation: ``sum over legs of q x (V_{t+h} - V_t)``."""
    total: FloatArray | None = None
    for leg, q in quantities.items():
        part = q * (value1[leg] - value0[leg])
        total = part if total is None else total + part
    assert total is not None
    return total


# --------------------------------------------------------------------------- engine


def _tails(scale: float) -> tuple[TailMove, ...]:
    return tail_weights(DEFAULT_TAIL_MOVES, scale)


def _block_margin(
    dates: pd.DatetimeIndex,
    legs: tuple[_Leg, ...],
    priced: _Priced,
    qty: dict[str, dict[str, FloatArray]],
    now: pd.DataFrame,
    params: pd.DataFrame,
    rows: slice,
    config: PortfolioBacktestConfig,
) -> tuple[FloatArray, FloatArray]:
    """IM and MM (USD) per (portfolio, date) of ``rows``, portfolio-major, one engine call."""
    from margin.book import Book
    from margin.engine import compute_margin

    idx = np.arange(len(dates))[rows]
    tags = np.array([f"@{d:%Y%m%d}" for d in dates[rows]])
    n_b = len(idx)
    symbols = config.symbols

    def per_date(names: list[str]) -> np.ndarray:  # leg-major: name + tag for every date
        return np.char.add(np.repeat(np.array(names), n_b), np.tile(tags, len(names)))

    def stack(table: Mapping[str, FloatArray]) -> FloatArray:
        nan = np.full(len(dates), np.nan)
        return np.concatenate([table.get(leg.name, nan)[idx] for leg in legs])

    is_opt = np.repeat([leg.kind == "option" for leg in legs], n_b)
    spot = np.concatenate([now[f"{leg.symbol}_spot"].to_numpy(float)[idx] for leg in legs])
    names = per_date([leg.name for leg in legs])
    instruments = pd.DataFrame(
        {
            "instrument": names,
            "kind": np.repeat([leg.kind for leg in legs], n_b),
            "underlying": per_date([leg.symbol for leg in legs]),
            "strike": stack(priced.strike),
            "expiry_years": np.where(is_opt, config.tenor_days / DAYS_PER_YEAR, np.nan),
            "option_type": pd.Series(
                np.repeat(["C" if leg.call else "P" for leg in legs], n_b)
            ).where(is_opt),
        }
    )
    market = pd.DataFrame(
        {
            "instrument": names,
            "mark": stack(priced.value0),
            "forward": np.where(is_opt, spot, np.nan),
            "vol": stack(priced.vol0),
        }
    )
    parts = []
    for portfolio in PORTFOLIOS:
        for leg_name, q in qty[portfolio].items():
            held = q[idx] != 0
            parts.append(
                pd.DataFrame(
                    {
                        "account": np.char.add(portfolio, tags[held]),
                        "instrument": np.char.add(leg_name, tags[held]),
                        "quantity": q[idx][held],
                    }
                )
            )
    underlyings = pd.DataFrame(
        {
            "underlying": per_date(list(symbols)),
            "index": np.concatenate([now[f"{s}_spot"].to_numpy(float)[idx] for s in symbols]),
            "rate": 0.0,
        }
    )
    book = Book.from_frames(
        instruments,
        pd.concat(parts, ignore_index=True),
        pd.DataFrame(columns=["account", "asset", "amount"]),
        market,
        underlyings,
    )
    methodology = _methodology(idx, tags, params, config)
    result = compute_margin(book, methodology, n_threads=1)
    frame = result.to_frame()
    frame = frame.reindex(per_date(list(PORTFOLIOS)))
    return frame["im"].to_numpy(float), frame["mm"].to_numpy(float)


def _methodology(
    idx: np.ndarray,
    tags: np.ndarray,
    params: pd.DataFrame,
    config: PortfolioBacktestConfig,
) -> Methodology:
    """Per-(symbol, date) IM and MM grids and per-date correlations (no figure of a date
    depends on another date of the block)."""
    cal = config.calibration
    values = {c: params[c].to_numpy(float)[idx] for c in params.columns}
    scenarios, mm_scenarios = {}, {}
    for s in config.symbols:
        longs, shorts = values[f"{s}_IM_long"], values[f"{s}_IM_short"]
        mm_longs, mm_shorts = values[f"{s}_MM_long"], values[f"{s}_MM_short"]
        ups, downs = values[f"{s}_vol_up"], values[f"{s}_vol_down"]
        for j in range(len(idx)):
            long, short = float(longs[j]), float(shorts[j])
            tails = _tails(max(long, short))
            shock = VolShock(
                up=float(ups[j]),
                down=float(downs[j]),
                power_short_dte=cal.power_short_dte,
                power_long_dte=cal.power_long_dte,
                dte_floor_days=cal.dte_floor_days,
                min_shocked_vol=cal.min_shocked_vol,
            )
            name = f"{s}{tags[j]}"
            scenarios[name] = scan_grid(long, short, shock, tails)
            mm_scenarios[name] = scan_grid(float(mm_longs[j]), float(mm_shorts[j]), shock, tails)
    p1, p2 = config.pair
    n = len(idx)
    corr = np.eye(2 * n)
    pairs = np.arange(n)
    corr[2 * pairs, 2 * pairs + 1] = corr[2 * pairs + 1, 2 * pairs] = values["correlation"]
    names = np.column_stack([np.char.add(p1, tags), np.char.add(p2, tags)]).ravel()
    return Methodology(
        scenarios=scenarios,
        mm_scenarios=mm_scenarios,
        im_loss_factor=1.0,
        mm_loss_factor=1.0,
        addons=config.addons,
        offsets=OffsetConfig(
            mode="correlation",
            cap=cal.offset_cap,
            underlyings=tuple(str(u) for u in names),
            correlation=tuple(tuple(float(x) for x in row) for row in corr),
        ),
    )


# --------------------------------------------------------------------------- backtest


@dataclass(frozen=True)
class PortfolioBacktestResult:
    """``summary``: :data:`PORTFOLIO_COLUMNS`, one row per portfolio and level; ``daily``: per
    portfolio and date the gross notional, IM, MM (USD at t) and realized P&L to t + h."""

    summary: pd.DataFrame
    daily: pd.DataFrame
    skew: str


def _parameter_frame(
    market: pd.DataFrame, scans: Mapping[str, pd.DataFrame], config: PortfolioBacktestConfig
) -> pd.DataFrame:
    cols: dict[str, pd.Series] = {}
    for s in config.symbols:
        if s not in scans:
            raise ValueError(f"no scan-range path for {s}")
        path = scans[s].reindex(market.index)
        for c in ("IM_long", "IM_short", "MM_long", "MM_short"):
            cols[f"{s}_{c}"] = path[c]
        shocks = vol_shock_path(market[f"{s}_dvol"], config)
        cols[f"{s}_vol_up"], cols[f"{s}_vol_down"] = shocks["up"], shocks["down"]
    p1, p2 = config.pair
    rets = np.log(market[[f"{p1}_spot", f"{p2}_spot"]]).diff()
    cols["correlation"] = stressed_correlation_path(rets, config.correlation_min_days)
    return pd.DataFrame(cols)


def portfolio_backtest(
    market: pd.DataFrame,
    scans: Mapping[str, pd.DataFrame],
    start: object,
    end: object,
    skew: SkewShape | None = None,
    config: PortfolioBacktestConfig | None = None,
) -> PortfolioBacktestResult:
    """Margin of the five portfolios at each date of ``[start, end]`` vs the realized P&L.

    Parameters
    ----------
    market : DataFrame
        Daily closes (gap-free daily ``DatetimeIndex``): ``<S>_spot``, ``<S>_perp`` (USD) and
        ``<S>_dvol`` (decimal annualised) for the symbols of the config (:func:`daily_market`).
    scans : mapping symbol → DataFrame
        Walk-forward scan ranges ``IM_long, IM_short, MM_long, MM_short`` (decimal of price)
        per date, built only from data up to that date (``BacktestResult.margins``).
    start, end : date-like
        Margin dates scored (inclusive); a date needs its own and its t + h data.
    skew : SkewShape, optional
        Implied-vol shape around DVOL (default flat).

    Returns
    -------
    PortfolioBacktestResult
    """
    config = config or PortfolioBacktestConfig()
    skew = skew or SkewShape.flat()
    h = config.horizon_days
    full = market.asfreq("D")
    params = _parameter_frame(full, scans, config)
    later = full.shift(-h)
    tz = full.index.tz
    t0, t1 = pd.Timestamp(start), pd.Timestamp(end)  # type: ignore[arg-type]
    if tz is not None:
        t0 = t0.tz_localize(tz) if t0.tzinfo is None else t0
        t1 = t1.tz_localize(tz) if t1.tzinfo is None else t1
    needed = [f"{s}_{k}" for s in config.symbols for k in ("spot", "perp")]
    needed.append(f"{config.option_underlying}_dvol")
    ok = full[needed].notna().all(axis=1) & later[needed].notna().all(axis=1)
    ok &= params.notna().all(axis=1) & (full.index >= t0) & (full.index <= t1)
    dates = pd.DatetimeIndex(full.index[ok.to_numpy()])
    now, nxt, par = full.loc[dates], later.loc[dates], params.loc[dates]
    legs = _legs(config)
    priced = _price_legs(legs, now, nxt, skew, config)
    qty = _quantities(priced, now, config)
    n = len(dates)
    im = np.full((len(PORTFOLIOS), n), np.nan)
    mm = np.full((len(PORTFOLIOS), n), np.nan)
    for a in range(0, n, config.block_days):
        rows = slice(a, min(a + config.block_days, n))
        b_im, b_mm = _block_margin(dates, legs, priced, qty, now, par, rows, config)
        width = rows.stop - rows.start
        im[:, rows] = b_im.reshape(len(PORTFOLIOS), width)
        mm[:, rows] = b_mm.reshape(len(PORTFOLIOS), width)
    spot = {leg.name: now[f"{leg.symbol}_spot"].to_numpy(float) for leg in legs}
    daily_parts = []
    for p, portfolio in enumerate(PORTFOLIOS):
        pnl = realized_pnl(qty[portfolio], priced.value0, priced.value1)
        notional = sum(np.abs(q) * spot[leg] for leg, q in qty[portfolio].items())
        daily_parts.append(
            pd.DataFrame(
                {
                    "portfolio": portfolio,
                    "date": dates,
                    "notional": notional,
                    "im": im[p],
                    "mm": mm[p],
                    "pnl": pnl,
                }
            )
        )
    daily = pd.concat(daily_parts, ignore_index=True) if daily_parts else pd.DataFrame()
    summary = pd.DataFrame(
        [
            _summary_row(daily[daily["portfolio"] == p], p, level, config)
            for p in PORTFOLIOS
            for level in ("IM", "MM")
        ],
        columns=list(PORTFOLIO_COLUMNS),
    )
    return PortfolioBacktestResult(summary=summary, daily=daily, skew=skew.source)


def _summary_row(
    rows: pd.DataFrame, portfolio: str, level: str, config: PortfolioBacktestConfig
) -> dict[str, object]:
    conf = config.im_confidence if level == "IM" else config.mm_confidence
    p = 1.0 - conf
    margin = rows[level.lower()].to_numpy(float)
    loss = -rows["pnl"].to_numpy(float)
    hits = loss > margin
    n, x = len(hits), int(hits.sum())
    out: dict[str, object] = dict.fromkeys(PORTFOLIO_COLUMNS)
    out |= {"portfolio": portfolio, "level": level, "n": n, "breaches": x, "expected_rate": p}
    if n == 0:
        return out
    cc = christoffersen(hits, p)
    out |= {
        "breach_rate": x / n,
        "kupiec_p": kupiec_pof(hits, p).pvalue,
        "christoffersen_ind_p": cc.ind_pvalue,
        "christoffersen_cc_p": cc.cc_pvalue,
        "zone": traffic_light(x, n, p),
        "avg_margin_usd": float(margin.mean()),
        "avg_margin_frac": float((margin / rows["notional"].to_numpy(float)).mean()),
        "max_loss_to_margin": float(np.max(loss / margin)),
    }
    return out


def load_snapshot_skew(path: Path, tenor_days: float = 30.0) -> SkewShape:
    """:func:`skew_from_snapshot` of a Deribit chain file (CSV, optionally gzipped)."""
    if not path.is_file():
        raise FileNotFoundError(f"option snapshot {path} not found")
    return skew_from_snapshot(pd.read_csv(path), tenor_days, source=path.name)
