"""Small synthetic books shared by the engine tests (not collected: no ``test_`` prefix)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from margin.book import Book

BTC, ETH = 50_000.0, 2_500.0
VOL = 0.6
T30 = 30.0 / 365.0


def instruments_frame() -> pd.DataFrame:
    """BTC and ETH perps, a BTC inverse perp and future, BTC and ETH option strips."""
    rows: list[dict[str, object]] = [
        {"instrument": "BTC-PERP", "kind": "linear_perp", "underlying": "BTC"},
        {"instrument": "BTC-INV", "kind": "inverse_perp", "underlying": "BTC", "contract_size": 10},
        {
            "instrument": "BTC-FUT",
            "kind": "linear_future",
            "underlying": "BTC",
            "expiry_years": 0.25,
        },
        {"instrument": "BTC-SPOT", "kind": "spot", "underlying": "BTC"},
        {"instrument": "ETH-PERP", "kind": "linear_perp", "underlying": "ETH"},
    ]
    for und, strikes in (("BTC", (45_000, 50_000, 55_000)), ("ETH", (2_250, 2_500, 2_750))):
        for k in strikes:
            for cp in ("C", "P"):
                rows.append(
                    {
                        "instrument": f"{und}-{k}-{cp}",
                        "kind": "option",
                        "underlying": und,
                        "strike": float(k),
                        "expiry_years": T30,
                        "option_type": cp,
                    }
                )
    return pd.DataFrame(rows)


def market_frames(
    btc: float = BTC, eth: float = ETH, vol: float = VOL, confidence: float = 1.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Market (marks: model values for options, forwards = index) and underlyings frames."""
    from margin.pricing import black76_price

    inst = instruments_frame()
    index = {"BTC": btc, "ETH": eth}
    s = inst["underlying"].map(index).to_numpy(dtype=float)
    is_opt = (inst["kind"] == "option").to_numpy()
    strike = inst["strike"].fillna(1.0).to_numpy(dtype=float)
    t = inst["expiry_years"].fillna(0.0).to_numpy(dtype=float)
    call = (inst["option_type"] == "C").to_numpy()
    marks = np.where(is_opt, black76_price(s, strike, t, vol, 0.0, call), s)
    market = pd.DataFrame(
        {
            "instrument": inst["instrument"],
            "mark": marks,
            "forward": s,
            "vol": np.where(is_opt, vol, np.nan),
            "confidence": confidence,
        }
    )
    underlyings = pd.DataFrame(
        {"underlying": ["BTC", "ETH"], "index": [btc, eth], "rate": [0.0, 0.0]}
    )
    return market, underlyings


def make_book(
    positions: Sequence[tuple[str, str, float]],
    collateral: Sequence[tuple[str, str, float]] = (),
    **market_kwargs: float,
) -> Book:
    """Book from (account, instrument, quantity) and (account, asset, amount) tuples."""
    market, underlyings = market_frames(**market_kwargs)
    pos = pd.DataFrame(list(positions), columns=["account", "instrument", "quantity"])
    col = pd.DataFrame(list(collateral), columns=["account", "asset", "amount"])
    return Book.from_frames(instruments_frame(), pos, col, market, underlyings)
