"""Seeded daily panel simulated from a GARCH-t process, shaped like the real daily panel.

It follows the ``features.matrix.build_daily_panel`` contract (MultiIndex ``(symbol, date)``,
decimal variances per day, ``har_*`` as means of log RV) so the forecasters can be tested
without real data. Hourly returns are drawn with the simulated daily variance and aggregated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from arch import arch_model
from arch.univariate import StudentsT


def simulate_panel(
    symbols: tuple[str, ...] = ("BTC", "ETH"),
    n_days: int = 700,
    start: str = "2021-01-01",
    seed: int = 7,
) -> pd.DataFrame:
    """Daily panel with ``ret, rv, log_rv, har_*, range estimators, rq, targets``."""
    frames = []
    for i, symbol in enumerate(symbols):
        rng = np.random.default_rng(seed + i)
        model = arch_model(None, mean="Zero", vol="GARCH", p=1, o=1, q=1, dist="t")
        model.distribution = StudentsT(seed=seed + i)  # seeded: the fixture is reproducible
        sim = model.simulate([0.2, 0.06, 0.04, 0.88, 6.0], n_days + 50, burn=200)
        sigma2 = (sim["volatility"].to_numpy()[50:] / 100.0) ** 2  # decimal per day
        hourly = rng.standard_t(6.0, size=(n_days, 24)) * np.sqrt(4.0 / 6.0)
        hourly *= np.sqrt(sigma2 / 24.0)[:, None]
        path = np.cumsum(hourly, axis=1)
        high = np.maximum(path.max(axis=1), 0.0)
        low = np.minimum(path.min(axis=1), 0.0)
        close = path[:, -1]
        rv = (hourly**2).sum(axis=1)
        dates = pd.date_range(start, periods=n_days, freq="D", tz="UTC")
        df = pd.DataFrame(
            {
                "ret": close,
                "rv": rv,
                "log_rv": np.log(rv),
                "parkinson": (high - low) ** 2 / (4 * np.log(2)),
                "garman_klass": 0.5 * (high - low) ** 2 - (2 * np.log(2) - 1) * close**2,
                "rogers_satchell": high * (high - close) + low * (low - close),
                "bipower": (np.pi / 2)
                * (np.abs(hourly[:, 1:]) * np.abs(hourly[:, :-1])).sum(axis=1),
                "rsv_pos": (np.where(hourly > 0, hourly, 0.0) ** 2).sum(axis=1),
                "rsv_neg": (np.where(hourly < 0, hourly, 0.0) ** 2).sum(axis=1),
                "rq": 24.0 / 3.0 * (hourly**4).sum(axis=1),
                "log_volume": 10 + rng.normal(size=n_days),
                "n_hours": 24,
                "incomplete": False,
            },
            index=pd.MultiIndex.from_product([[symbol], dates], names=["symbol", "date"]),
        )
        df["yang_zhang"] = df["rogers_satchell"]
        df["har_d"] = df["log_rv"]
        df["har_w"] = df["log_rv"].rolling(7, min_periods=5).mean()
        df["har_m"] = df["log_rv"].rolling(30, min_periods=21).mean()
        df["ret_lag1"] = df["ret"].shift(1)
        df["leverage"] = np.minimum(df["ret"], 0.0)
        df["dvol"] = np.nan
        df["dvol_change"] = np.nan
        df["funding"] = np.nan
        df.iloc[0, df.columns.get_loc("ret")] = np.nan
        for h in (1, 7):
            df[f"target_rv_h{h}"] = sum(df["rv"].shift(-k) for k in range(1, h + 1))
        frames.append(df)
    return pd.concat(frames).sort_index()
