"""The book an exchange feeds the engine: instruments, positions, collateral, market snapshot.

Frames (CSV or Parquet files, or pandas frames) and their columns
-----------------------------------------------------------------
``instruments``: ``instrument, kind, underlying`` and, as the kind needs them, ``strike``
(USD), ``expiry_years`` (years to expiry, ACT/365), ``option_type`` (``C``/``P``),
``settlement`` (``usd``/``coin``; inverse kinds are always coin) and ``contract_size``
(default 1; USD notional per contract for inverse kinds). ``kind`` is one of ``spot,
linear_perp, inverse_perp, linear_future, inverse_future, option``.

``positions``: ``account, instrument, quantity`` (signed contracts; one row per pair).

``collateral``: ``account, asset, amount`` (asset units; ``USD``/``USDT``/``USDC`` are worth 1,
an asset named like an underlying is worth its index).

``market``: ``instrument, mark`` (USD) and optional ``forward`` (USD; defaults to the mark for
futures and to the index otherwise), ``vol`` (annualised decimal; NaN means "read from the
surface"), ``confidence`` (oracle confidence in [0, 1], default 1), ``liquidity``
(contracts; default unlimited, used by the concentration add-on).

``underlyings``: ``underlying, index`` (USD) and optional ``rate`` (annual decimal, default 0)
and ``confidence`` (default 1).

Bad input raises :class:`~margin.errors.BookError` naming the frame, the row and the rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from margin.errors import BookError
from margin.instruments import InstrumentKind, InstrumentTable
from margin.typing import FloatArray, IntArray, StrArray
from margin.vol_surface import VolSurface

__all__ = ["STABLE_ASSETS", "Book", "MarketSnapshot", "load_book"]

#: Collateral assets valued at 1 USD.
STABLE_ASSETS = ("USD", "USDT", "USDC")


@dataclass(frozen=True)
class MarketSnapshot:
    """Prices at one instant, aligned with the book's underlyings and instruments.

    Attributes
    ----------
    underlyings : names, in code order.
    index, rate, underlying_confidence : per underlying; USD, annual decimal, [0, 1].
    mark, forward, vol, confidence : per instrument; USD, USD, annualised decimal (NaN where
        to be read from ``surfaces``), [0, 1].
    liquidity : per instrument, contracts that can be closed without undue impact (e.g. a
        day's volume); ``None`` or ``inf`` means no concentration add-on.
    surfaces : optional vol surface per underlying name.
    """

    underlyings: tuple[str, ...]
    index: FloatArray
    rate: FloatArray
    underlying_confidence: FloatArray
    mark: FloatArray
    forward: FloatArray
    vol: FloatArray
    confidence: FloatArray
    liquidity: FloatArray | None = None
    surfaces: Mapping[str, VolSurface] = field(default_factory=dict)


@dataclass(frozen=True)
class Book:
    """Positions and collateral of many accounts, with the instruments and market they use.

    Attributes
    ----------
    instruments : InstrumentTable
    accounts : account names, shape (n_accounts,).
    positions : CSR matrix accounts x instruments of signed contracts (canonical: sorted
        indices, no duplicates, no explicit zeros).
    assets : collateral asset names.
    collateral : CSR matrix accounts x assets of amounts in asset units.
    market : MarketSnapshot

    Notes
    -----
    A book is immutable: it takes the position and collateral matrices as given and makes
    their arrays read-only, so an in-place edit raises ``ValueError`` instead of leaving the
    engine's cached layout stale. Build a new book (e.g. :meth:`select_accounts`, or from
    copies) to change positions.
    """

    instruments: InstrumentTable
    accounts: StrArray
    positions: sp.csr_matrix
    assets: tuple[str, ...]
    collateral: sp.csr_matrix
    market: MarketSnapshot
    #: derived, position-only structures the engine builds once per book (never the figures)
    cache: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n_acc, n_inst = len(self.accounts), len(self.instruments)
        if self.positions.shape != (n_acc, n_inst):
            raise BookError(f"positions shape {self.positions.shape} != ({n_acc}, {n_inst})")
        if self.collateral.shape != (n_acc, len(self.assets)):
            raise BookError("collateral shape does not match accounts x assets")
        # The engine caches structures derived from the positions on the book (``cache``);
        # freezing the arrays makes an in-place edit fail loudly instead of going stale.
        for matrix in (self.positions, self.collateral):
            for array in (matrix.data, matrix.indices, matrix.indptr):
                array.flags.writeable = False

    @property
    def n_accounts(self) -> int:
        """Number of accounts."""
        return len(self.accounts)

    def asset_prices(self) -> FloatArray:
        """USD price per collateral asset (stablecoins 1, coins their underlying's index)."""
        return _asset_prices(self.assets, self.market)

    def asset_underlying(self) -> IntArray:
        """Underlying code per collateral asset (-1 for stablecoins)."""
        codes = {u: i for i, u in enumerate(self.market.underlyings)}
        return np.array([codes.get(a, -1) for a in self.assets], dtype=np.intp)

    def select_accounts(self, rows: IntArray | slice) -> Book:
        """Sub-book of the given account rows (same instruments and market)."""
        return Book(
            instruments=self.instruments,
            accounts=self.accounts[rows],
            positions=_canonical(self.positions[rows]),
            assets=self.assets,
            collateral=_canonical(self.collateral[rows]),
            market=self.market,
        )

    @classmethod
    def from_frames(
        cls,
        instruments: pd.DataFrame,
        positions: pd.DataFrame,
        collateral: pd.DataFrame,
        market: pd.DataFrame,
        underlyings: pd.DataFrame,
        *,
        allow_borrowing: bool = False,
        surfaces: Mapping[str, VolSurface] | None = None,
    ) -> Book:
        """Build and validate a book from pandas frames (columns in the module docstring)."""
        und = _underlyings(underlyings)
        table = _instrument_table(instruments, tuple(und["underlying"]))
        snapshot = _market(market, table, und, surfaces or {})
        accounts, pos = _positions(positions, table)
        assets, acc2, coll = _collateral(collateral, accounts, allow_borrowing)
        if len(acc2) > len(accounts):  # accounts holding collateral but no position
            pos = sp.vstack([pos, sp.csr_matrix((len(acc2) - len(accounts), len(table)))])
            pos = _canonical(pos)
        _asset_prices(assets, snapshot)
        return cls(table, acc2, pos, assets, coll, snapshot)

    @classmethod
    def from_files(
        cls,
        directory: str | Path,
        *,
        allow_borrowing: bool = False,
        surfaces: Mapping[str, VolSurface] | None = None,
    ) -> Book:
        """Read ``instruments``, ``positions``, ``collateral``, ``market`` and ``underlyings``
        from ``directory`` (each ``.parquet`` or ``.csv``) and build the book."""
        return load_book(directory, allow_borrowing=allow_borrowing, surfaces=surfaces)


def load_book(
    directory: str | Path,
    *,
    allow_borrowing: bool = False,
    surfaces: Mapping[str, VolSurface] | None = None,
) -> Book:
    """Load a book from a folder of CSV or Parquet files (see the module docstring)."""
    folder = Path(directory)
    frames = {}
    for name in ("instruments", "positions", "collateral", "market", "underlyings"):
        frames[name] = _read_frame(folder, name)
    return Book.from_frames(
        frames["instruments"],
        frames["positions"],
        frames["collateral"],
        frames["market"],
        frames["underlyings"],
        allow_borrowing=allow_borrowing,
        surfaces=surfaces,
    )


def _read_frame(folder: Path, name: str) -> pd.DataFrame:
    for suffix in (".parquet", ".csv"):
        path = folder / f"{name}{suffix}"
        if path.exists():
            if suffix == ".parquet":
                return pd.read_parquet(path)
            return pd.read_csv(path)
    raise FileNotFoundError(f"book file {folder / name}.parquet (or .csv) not found")


def _canonical(matrix: sp.spmatrix) -> sp.csr_matrix:
    out = sp.csr_matrix(matrix, dtype=np.float64)
    out.sum_duplicates()
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _require(frame: pd.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    for col in columns:
        if col not in frame.columns:
            raise BookError(f"{name}: missing column {col!r}")


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _numeric(frame: pd.DataFrame, name: str, col: str, default: float | None = None) -> FloatArray:
    if col not in frame.columns:
        if default is None:
            raise BookError(f"{name}: missing column {col!r}")
        return np.full(len(frame), default)
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
    return values


def _underlyings(frame: pd.DataFrame) -> pd.DataFrame:
    _require(frame, "underlyings", ("underlying", "index"))
    names = frame["underlying"].astype(str).to_numpy()
    dup = pd.Series(names).duplicated().to_numpy()
    if dup.any():
        row = _first_bad(dup)
        raise BookError(f"underlyings row {row}: duplicate underlying {names[row]!r}")
    index = _numeric(frame, "underlyings", "index")
    bad = ~np.isfinite(index) | (index <= 0)
    if bad.any():
        row = _first_bad(bad)
        raise BookError(f"underlyings row {row}: missing or non-positive index for {names[row]!r}")
    rate = _numeric(frame, "underlyings", "rate", 0.0)
    conf = _numeric(frame, "underlyings", "confidence", 1.0)
    for col, arr in (("rate", rate), ("confidence", conf)):
        if not np.isfinite(arr).all():
            row = _first_bad(~np.isfinite(arr))
            raise BookError(f"underlyings row {row}: {col} is not a number")
    return pd.DataFrame({"underlying": names, "index": index, "rate": rate, "confidence": conf})


def _instrument_table(frame: pd.DataFrame, underlyings: tuple[str, ...]) -> InstrumentTable:
    _require(frame, "instruments", ("instrument", "kind", "underlying"))
    n = len(frame)
    ids = frame["instrument"].astype(str).to_numpy(dtype=object)
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        row = _first_bad(dup)
        raise BookError(f"instruments row {row}: duplicate instrument {ids[row]!r}")
    kinds = np.empty(n, dtype=np.intp)
    for row, name in enumerate(frame["kind"].astype(str)):
        try:
            kinds[row] = InstrumentKind.parse(name)
        except KeyError:
            raise BookError(f"instruments row {row}: unknown kind {name!r}") from None
    codes = {u: i for i, u in enumerate(underlyings)}
    und = np.empty(n, dtype=np.intp)
    for row, name in enumerate(frame["underlying"].astype(str)):
        if name not in codes:
            raise BookError(f"instruments row {row}: underlying {name!r} not in underlyings")
        und[row] = codes[name]
    is_opt = kinds == InstrumentKind.OPTION
    dated = is_opt | np.isin(kinds, (InstrumentKind.LINEAR_FUTURE, InstrumentKind.INVERSE_FUTURE))
    strike = _numeric(frame, "instruments", "strike", np.nan)
    expiry = _numeric(frame, "instruments", "expiry_years", np.nan)
    bad = is_opt & ~(np.isfinite(strike) & (strike > 0))
    if bad.any():
        row = _first_bad(bad)
        raise BookError(f"instruments row {row}: option {ids[row]!r} needs a positive strike")
    bad = dated & ~np.isfinite(expiry)
    if bad.any():
        row = _first_bad(bad)
        raise BookError(f"instruments row {row}: {ids[row]!r} needs expiry_years")
    if "option_type" in frame.columns:
        otype = frame["option_type"].astype(str).str.strip().str.upper().to_numpy()
    else:
        otype = np.full(n, "")
    bad = is_opt & ~np.isin(otype, ("C", "P", "CALL", "PUT"))
    if bad.any():
        row = _first_bad(bad)
        raise BookError(f"instruments row {row}: option {ids[row]!r} needs option_type C or P")
    is_call = is_opt & np.isin(otype, ("C", "CALL"))
    if "settlement" in frame.columns:
        settle = frame["settlement"].astype(str).str.strip().str.lower().to_numpy()
    else:
        settle = np.full(n, "usd")
    bad = ~np.isin(settle, ("usd", "coin", "nan", ""))
    if bad.any():
        row = _first_bad(bad)
        raise BookError(f"instruments row {row}: settlement must be 'usd' or 'coin'")
    inverse = np.isin(kinds, (InstrumentKind.INVERSE_PERP, InstrumentKind.INVERSE_FUTURE))
    coin = inverse | (settle == "coin")
    size = _numeric(frame, "instruments", "contract_size", 1.0)
    size = np.where(np.isnan(size), 1.0, size)
    bad = ~(np.isfinite(size) & (size > 0))
    if bad.any():
        row = _first_bad(bad)
        raise BookError(f"instruments row {row}: contract_size must be positive")
    return InstrumentTable(
        ids=ids,
        kind=kinds,
        underlying=und,
        underlyings=underlyings,
        strike=np.where(is_opt, strike, np.nan),
        expiry_years=np.where(dated, expiry, np.nan),
        is_call=is_call,
        coin_settled=coin,
        contract_size=size,
    )


def _market(
    frame: pd.DataFrame,
    table: InstrumentTable,
    und: pd.DataFrame,
    surfaces: Mapping[str, VolSurface],
) -> MarketSnapshot:
    _require(frame, "market", ("instrument", "mark"))
    names = frame["instrument"].astype(str).to_numpy()
    pos = pd.Index(table.ids).get_indexer(names)
    if (pos < 0).any():
        row = _first_bad(pos < 0)
        raise BookError(f"market row {row}: unknown instrument {names[row]!r}")
    if pd.Series(pos).duplicated().any():
        row = _first_bad(pd.Series(pos).duplicated().to_numpy())
        raise BookError(f"market row {row}: duplicate instrument {names[row]!r}")
    n = len(table)
    missing = np.ones(n, dtype=bool)
    missing[pos] = False
    if missing.any():
        i = _first_bad(missing)
        raise BookError(f"market: missing price for instrument {table.ids[i]!r}")
    mark = np.full(n, np.nan)
    mark[pos] = _numeric(frame, "market", "mark")
    bad = ~np.isfinite(mark) | (mark < 0)
    if bad.any():
        i = _first_bad(bad)
        row = int(np.flatnonzero(pos == i)[0])
        raise BookError(f"market row {row}: missing price (mark) for instrument {table.ids[i]!r}")
    index = und["index"].to_numpy()[table.underlying]
    forward = np.full(n, np.nan)
    forward[pos] = _numeric(frame, "market", "forward", np.nan)
    is_future = np.isin(table.kind, (InstrumentKind.LINEAR_FUTURE, InstrumentKind.INVERSE_FUTURE))
    forward = np.where(np.isnan(forward), np.where(is_future, mark, index), forward)
    vol = np.full(n, np.nan)
    vol[pos] = _numeric(frame, "market", "vol", np.nan)
    conf = np.ones(n)
    conf[pos] = _numeric(frame, "market", "confidence", 1.0)
    conf = np.where(np.isnan(conf), 1.0, conf)
    liquidity = np.full(n, np.inf)
    liquidity[pos] = _numeric(frame, "market", "liquidity", np.inf)
    liquidity = np.where(np.isnan(liquidity), np.inf, liquidity)
    if (liquidity <= 0).any():
        i = _first_bad(liquidity <= 0)
        row = int(np.flatnonzero(pos == i)[0])
        raise BookError(f"market row {row}: liquidity must be positive")
    vol = _resolve_vols(table, vol, forward, surfaces, pos)
    return MarketSnapshot(
        underlyings=table.underlyings,
        index=und["index"].to_numpy(dtype=np.float64),
        rate=und["rate"].to_numpy(dtype=np.float64),
        underlying_confidence=und["confidence"].to_numpy(dtype=np.float64),
        mark=mark,
        forward=forward,
        vol=vol,
        confidence=conf,
        liquidity=liquidity,
        surfaces=dict(surfaces),
    )


def _resolve_vols(
    table: InstrumentTable,
    vol: FloatArray,
    forward: FloatArray,
    surfaces: Mapping[str, VolSurface],
    pos: IntArray,
) -> FloatArray:
    """Per-instrument vol: the snapshot's where given, else the underlying's surface."""
    out = vol.copy()
    is_opt = table.is_option
    need = is_opt & ~np.isfinite(out)
    for code, name in enumerate(table.underlyings):
        rows = np.flatnonzero(need & (table.underlying == code))
        if rows.size == 0:
            continue
        if name not in surfaces:
            row = int(np.flatnonzero(pos == rows[0])[0])
            raise BookError(
                f"market row {row}: option {table.ids[rows[0]]!r} has no vol and no {name} "
                "surface was given"
            )
        k = np.log(table.strike[rows] / forward[rows])
        out[rows] = surfaces[name].vol(table.expiry_years[rows], k)
    bad = is_opt & ~(np.isfinite(out) & (out > 0))
    if bad.any():
        i = _first_bad(bad)
        row = int(np.flatnonzero(pos == i)[0])
        raise BookError(f"market row {row}: option {table.ids[i]!r} needs a positive vol")
    return np.where(is_opt, out, 0.0)


def _positions(frame: pd.DataFrame, table: InstrumentTable) -> tuple[StrArray, sp.csr_matrix]:
    _require(frame, "positions", ("account", "instrument", "quantity"))
    names = frame["instrument"].astype(str).to_numpy()
    inst = pd.Index(table.ids).get_indexer(names)
    if (inst < 0).any():
        row = _first_bad(inst < 0)
        raise BookError(f"positions row {row}: unknown instrument {names[row]!r}")
    qty = _numeric(frame, "positions", "quantity")
    if not np.isfinite(qty).all():
        row = _first_bad(~np.isfinite(qty))
        raise BookError(f"positions row {row}: quantity is NaN or not a number")
    acc_codes, accounts = pd.factorize(frame["account"].astype(str), sort=True)
    dup = pd.DataFrame({"a": acc_codes, "i": inst}).duplicated().to_numpy()
    if dup.any():
        row = _first_bad(dup)
        raise BookError(
            f"positions row {row}: duplicate position for account "
            f"{frame['account'].iloc[row]!r} and instrument {names[row]!r}"
        )
    matrix = sp.coo_matrix((qty, (acc_codes, inst)), shape=(len(accounts), len(table)))
    return np.asarray(accounts, dtype=object), _canonical(matrix)


def _collateral(
    frame: pd.DataFrame, accounts: StrArray, allow_borrowing: bool
) -> tuple[tuple[str, ...], StrArray, sp.csr_matrix]:
    _require(frame, "collateral", ("account", "asset", "amount"))
    amount = _numeric(frame, "collateral", "amount")
    if not np.isfinite(amount).all():
        row = _first_bad(~np.isfinite(amount))
        raise BookError(f"collateral row {row}: amount is NaN or not a number")
    if not allow_borrowing and (amount < 0).any():
        row = _first_bad(amount < 0)
        raise BookError(
            f"collateral row {row}: negative amount {amount[row]} (borrowing is not enabled)"
        )
    acc_names = frame["account"].astype(str).to_numpy()
    extra = sorted(set(acc_names) - set(accounts))
    all_accounts = np.asarray(list(accounts) + extra, dtype=object)
    acc_codes = pd.Index(all_accounts).get_indexer(acc_names)
    asset_codes, assets = pd.factorize(frame["asset"].astype(str), sort=True)
    dup = pd.DataFrame({"a": acc_codes, "s": asset_codes}).duplicated().to_numpy()
    if dup.any():
        row = _first_bad(dup)
        raise BookError(
            f"collateral row {row}: duplicate row for account {acc_names[row]!r} "
            f"and asset {assets[asset_codes[row]]!r}"
        )
    matrix = sp.coo_matrix(
        (amount, (acc_codes, asset_codes)), shape=(len(all_accounts), len(assets))
    )
    return tuple(str(a) for a in assets), all_accounts, _canonical(matrix)


def _asset_prices(assets: tuple[str, ...], market: MarketSnapshot) -> FloatArray:
    codes = {u: i for i, u in enumerate(market.underlyings)}
    prices = np.empty(len(assets))
    for j, asset in enumerate(assets):
        if asset in STABLE_ASSETS:
            prices[j] = 1.0
        elif asset in codes:
            prices[j] = market.index[codes[asset]]
        else:
            raise BookError(
                f"collateral asset {asset!r} has no price (not a stablecoin nor an underlying)"
            )
    return prices
