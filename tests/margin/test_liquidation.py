"""Partial liquidation plans: largest worst-scenario contributor first, back above IM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from engine_books import BTC, instruments_frame, market_frames

from margin.book import Book
from margin.engine import compute_margin
from margin.liquidation import PLAN_COLUMNS, liquidation_plan
from margin.methodology import Methodology

METHOD = Methodology(offsets={"mode": "none"})


def _book() -> Book:
    market, und = market_frames()
    market = market.assign(liquidity=1_000.0)
    pos = pd.DataFrame(
        {
            "account": ["weak", "weak", "weak", "safe"],
            "instrument": ["BTC-PERP", "ETH-PERP", "BTC-55000-C", "BTC-PERP"],
            "quantity": [4.0, 20.0, -1.0, 0.1],
        }
    )
    col = pd.DataFrame(
        {"account": ["weak", "safe"], "asset": ["USD", "USD"], "amount": [30_000.0, 50_000.0]}
    )
    return Book.from_frames(instruments_frame(), pos, col, market, und)


def test_plan_closes_largest_contributor_first_until_above_im() -> None:
    book = _book()
    before = book.positions.copy()
    res = compute_margin(book, METHOD)
    assert list(res.liquidatable) == [False, True]  # accounts sorted: safe, weak
    plan = liquidation_plan(book, METHOD, res, chunk_fraction=0.5)
    assert list(plan.columns) == PLAN_COLUMNS
    assert set(plan["account"]) == {"weak"}
    # the 4 BTC long perp (200k notional) loses most at -16%: it goes first, half of it
    first = plan.iloc[0]
    assert first["instrument"] == "BTC-PERP" and first["quantity"] == pytest.approx(-2.0)
    assert plan["restored"].iloc[-1]
    assert plan["equity_after"].iloc[-1] >= plan["im_after"].iloc[-1]
    assert not plan["restored"].iloc[:-1].any()
    # IM falls with every order; equity only loses the slippage
    assert np.all(np.diff(plan["im_after"]) <= 1e-9)
    assert plan["equity_after"].iloc[-1] == pytest.approx(
        res.equity[1] - plan["slippage_usd"].sum()
    )
    # square-root impact: Y sigma |Q| N sqrt(|Q| / V) with sigma 3 %, V 1,000 contracts
    assert first["slippage_usd"] == pytest.approx(0.03 * 2.0 * BTC * np.sqrt(2.0 / 1_000.0))
    # the book itself is untouched
    assert (book.positions != before).nnz == 0


def test_no_plan_for_healthy_accounts() -> None:
    book = _book().select_accounts(np.array([0]))
    assert liquidation_plan(book, METHOD).empty
    with pytest.raises(ValueError, match="chunk_fraction"):
        liquidation_plan(book, METHOD, chunk_fraction=0.0)
