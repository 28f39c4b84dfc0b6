"""Book builders from frames, CSV and Parquet, and their one-sentence errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_books import BTC, instruments_frame, make_book, market_frames

from margin.book import Book, load_book
from margin.errors import BookError
from margin.instruments import InstrumentKind
from margin.vol_surface import VolSurface


def _frames() -> dict[str, pd.DataFrame]:
    market, und = market_frames()
    return {
        "instruments": instruments_frame(),
        "positions": pd.DataFrame(
            {
                "account": ["b", "a", "a"],
                "instrument": ["BTC-PERP", "BTC-PERP", "BTC-50000-C"],
                "quantity": [1.0, -2.0, 3.0],
            }
        ),
        "collateral": pd.DataFrame(
            {"account": ["a", "c"], "asset": ["USD", "BTC"], "amount": [1_000.0, 0.5]}
        ),
        "market": market,
        "underlyings": und,
    }


def _build(frames: dict[str, pd.DataFrame], **kwargs: object) -> Book:
    return Book.from_frames(
        frames["instruments"],
        frames["positions"],
        frames["collateral"],
        frames["market"],
        frames["underlyings"],
        **kwargs,  # type: ignore[arg-type]
    )


def test_from_frames_builds_sparse_positions_and_collateral() -> None:
    book = _build(_frames())
    assert list(book.accounts) == ["a", "b", "c"]  # sorted; c only holds collateral
    assert book.positions.shape == (3, len(instruments_frame()))
    dense = book.positions.toarray()
    cols = {name: i for i, name in enumerate(book.instruments.ids)}
    assert dense[0, cols["BTC-PERP"]] == -2.0 and dense[0, cols["BTC-50000-C"]] == 3.0
    assert dense[1, cols["BTC-PERP"]] == 1.0 and dense[2].sum() == 0.0
    assert book.assets == ("BTC", "USD")
    np.testing.assert_array_equal(book.collateral.toarray(), [[0, 1000.0], [0, 0], [0.5, 0]])
    np.testing.assert_array_equal(book.asset_prices(), [BTC, 1.0])
    assert book.instruments.kind[cols["BTC-INV"]] == InstrumentKind.INVERSE_PERP
    assert book.instruments.coin_settled[cols["BTC-INV"]]
    assert book.instruments.is_call[cols["BTC-50000-C"]]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_load_from_files(tmp_path: Path, fmt: str) -> None:
    frames = _frames()
    for name, frame in frames.items():
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    book = load_book(tmp_path)
    ref = _build(frames)
    np.testing.assert_array_equal(book.positions.toarray(), ref.positions.toarray())
    np.testing.assert_allclose(book.market.vol, ref.market.vol)
    np.testing.assert_array_equal(book.accounts, ref.accounts)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="instruments"):
        load_book(tmp_path)


@pytest.mark.parametrize(
    ("frame", "edit", "message"),
    [
        (
            "positions",
            lambda f: f.assign(instrument=["BTC-PERP", "NOPE", "BTC-PERP"]),
            r"positions row 1: unknown instrument 'NOPE'",
        ),
        (
            "positions",
            lambda f: f.assign(quantity=[1.0, np.nan, 2.0]),
            r"positions row 1: quantity is NaN",
        ),
        (
            "positions",
            lambda f: f.assign(account=["a", "a", "a"]),
            r"positions row 1: duplicate position for account 'a' and instrument 'BTC-PERP'",
        ),
        (
            "collateral",
            lambda f: f.assign(amount=[1.0, -0.5]),
            r"collateral row 1: negative amount -0.5 \(borrowing is not enabled\)",
        ),
        (
            "collateral",
            lambda f: f.assign(asset=["USD", "DOGE"]),
            r"collateral asset 'DOGE' has no price",
        ),
        ("market", lambda f: f.iloc[1:], r"market: missing price for instrument 'BTC-PERP'"),
        (
            "market",
            lambda f: f.assign(mark=np.where(f.index == 3, np.nan, f["mark"])),
            r"market row 3: missing price \(mark\) for instrument 'BTC-SPOT'",
        ),
        (
            "instruments",
            lambda f: f.assign(kind=["linear_perp", "swap", *list(f["kind"][2:])]),
            r"instruments row 1: unknown kind 'swap'",
        ),
        (
            "instruments",
            lambda f: f.assign(strike=np.where(f.index == 6, np.nan, f["strike"])),
            r"instruments row 6: option 'BTC-45000-P' needs a positive strike",
        ),
        (
            "underlyings",
            lambda f: f.assign(index=[np.nan, 1.0]),
            r"underlyings row 0: missing or non-positive index for 'BTC'",
        ),
        (
            "positions",
            lambda f: f.drop(columns="quantity"),
            r"positions: missing column 'quantity'",
        ),
    ],
)
def test_bad_input_names_the_row(frame: str, edit: object, message: str) -> None:
    frames = _frames()
    frames[frame] = edit(frames[frame])  # type: ignore[operator]
    with pytest.raises(BookError, match=message):
        _build(frames)


def test_borrowing_allowed_when_enabled() -> None:
    frames = _frames()
    frames["collateral"] = frames["collateral"].assign(amount=[-100.0, 0.5])
    book = _build(frames, allow_borrowing=True)
    assert book.collateral.toarray()[0, 1] == -100.0
    assert issubclass(BookError, ValueError)


def test_vol_from_surface_when_snapshot_has_none() -> None:
    frames = _frames()
    frames["market"] = frames["market"].assign(vol=np.nan)
    with pytest.raises(BookError, match="no vol and no BTC surface"):
        _build(frames)
    surface = VolSurface.from_points([0.05, 0.05, 0.2], [-0.1, 0.1, 0.0], [0.7, 0.5, 0.55])
    book = _build(frames, surfaces={"BTC": surface, "ETH": surface})
    cols = {name: i for i, name in enumerate(book.instruments.ids)}
    t = book.instruments.expiry_years[cols["BTC-50000-C"]]
    k = np.log(50_000 / BTC)
    assert book.market.vol[cols["BTC-50000-C"]] == pytest.approx(float(surface.vol(t, k)))
    assert book.market.vol[cols["BTC-PERP"]] == 0.0


def test_select_accounts_keeps_rows() -> None:
    book = make_book([("a", "BTC-PERP", 1.0), ("b", "ETH-PERP", 2.0)], [("b", "USD", 5.0)])
    sub = book.select_accounts(np.array([1]))
    assert list(sub.accounts) == ["b"]
    assert sub.positions.nnz == 1 and sub.collateral.toarray().tolist() == [[5.0]]


def test_positions_and_collateral_cannot_be_edited_in_place() -> None:
    """The engine caches a layout derived from the positions: edits must build a new book."""
    book = _build(_frames())
    for array in (book.positions.data, book.positions.indices, book.collateral.data):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 7.0
    half = book.select_accounts(np.array([0, 2]))
    assert not half.positions.data.flags.writeable
    np.testing.assert_array_equal(half.positions.toarray(), book.positions.toarray()[[0, 2]])
