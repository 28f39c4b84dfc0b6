"""Where each market-history series lives inside a data directory, and what it holds.

A data directory mirrors the embedded data set::

    binance_spot_1h/BTCUSDT_1h.csv.gz            hourly spot klines
    binance_usdm_perp_1h/BTCUSDT_perp_1h.csv.gz  hourly USDⓈ-M perpetual klines (last price)
    binance_usdm_mark_1h/BTCUSDT_mark_1h.csv.gz  hourly mark-price klines
    binance_usdm_funding_8h/BTCUSDT_funding_8h.csv.gz  8-hourly funding rates
    deribit_dvol_1d/BTC_DVOL_1d.csv.gz           daily DVOL (percent)
    deribit_options_snapshots/ETH_options_<stamp>.csv.gz  option-chain snapshots
    reference_daily/BTCUSD_coinbase_bitstamp_1d.csv.gz    independent-venue daily BTC

Every file is a gzip CSV with a header row; time series carry a ``timestamp`` column in
ISO-8601 UTC (``YYYY-MM-DDTHH:MM:SSZ``), the bar's open time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: The underlyings xmargin covers, by base asset.
SYMBOLS: tuple[str, ...] = ("BTC", "ETH", "SOL", "XRP", "DOGE", "BNB")

#: Quote currency of every Binance pair.
QUOTE = "USDT"

OHLC: tuple[str, ...] = ("open", "high", "low", "close")
OHLCV: tuple[str, ...] = (*OHLC, "volume")

#: Columns an option-chain snapshot must carry (all others are kept as published).
OPTION_COLUMNS: tuple[str, ...] = (
    "instrument_name",
    "creation_timestamp",
    "underlying_price",
    "mark_price",
    "expire_date",
    "strike_price",
    "option_type",
)


@dataclass(frozen=True)
class SourceSpec:
    """One kind of series: its folder, file-name pattern and columns.

    Attributes
    ----------
    kind:
        Short name used in :class:`features.history.MarketHistory` (``spot``, ``perp`` ...).
    folder:
        Sub-folder of the data directory.
    template:
        File name with ``{symbol}`` for the base asset (``BTC``).
    columns:
        Required columns, in file order.
    interval:
        Bar spacing as a pandas offset string (``1h``, ``8h``, ``1D``), or ``None`` for
        snapshots.
    price_columns:
        Columns that must be finite and strictly positive.
    """

    kind: str
    folder: str
    template: str
    columns: tuple[str, ...]
    interval: str | None
    price_columns: tuple[str, ...] = ()

    @property
    def pattern(self) -> re.Pattern[str]:
        """Regular expression matching this kind's file names; group 1 is the symbol."""
        escaped = re.escape(self.template).replace(r"\{symbol\}", "([A-Z0-9]+)")
        escaped = escaped.replace(r"\{stamp\}", r"[0-9T:\-]+Z?")
        return re.compile(f"^{escaped}$")

    def filename(self, symbol: str, stamp: str = "") -> str:
        """File name of ``symbol``'s series (``stamp`` only for snapshots)."""
        return self.template.format(symbol=symbol, stamp=stamp)

    def path(self, data_dir: Path, symbol: str) -> Path:
        """Path of ``symbol``'s series inside ``data_dir``."""
        return Path(data_dir) / self.folder / self.filename(symbol)

    @property
    def is_ohlc(self) -> bool:
        """Whether the series carries open/high/low/close bars."""
        return set(OHLC) <= set(self.columns)


SPOT = SourceSpec(
    "spot", "binance_spot_1h", "{symbol}USDT_1h.csv.gz", ("timestamp", *OHLCV), "1h", OHLC
)
PERP = SourceSpec(
    "perp",
    "binance_usdm_perp_1h",
    "{symbol}USDT_perp_1h.csv.gz",
    ("timestamp", *OHLCV),
    "1h",
    OHLC,
)
MARK = SourceSpec(
    "mark", "binance_usdm_mark_1h", "{symbol}USDT_mark_1h.csv.gz", ("timestamp", *OHLC), "1h", OHLC
)
FUNDING = SourceSpec(
    "funding",
    "binance_usdm_funding_8h",
    "{symbol}USDT_funding_8h.csv.gz",
    ("timestamp", "funding_rate"),
    "1h",  # funding times are floored to the hour; the spacing itself is 8 h
)
DVOL = SourceSpec(
    "dvol", "deribit_dvol_1d", "{symbol}_DVOL_1d.csv.gz", ("timestamp", *OHLC), "1D", OHLC
)
OPTIONS = SourceSpec(
    "options",
    "deribit_options_snapshots",
    "{symbol}_options_{stamp}.csv.gz",
    OPTION_COLUMNS,
    None,
)
REFERENCE = SourceSpec(
    "reference",
    "reference_daily",
    "{symbol}USD_coinbase_bitstamp_1d.csv.gz",
    ("timestamp", *OHLCV),
    "1D",
    OHLC,
)

#: Every kind of series, in the order summaries list them.
SPECS: tuple[SourceSpec, ...] = (SPOT, PERP, MARK, FUNDING, DVOL, OPTIONS, REFERENCE)
SPEC_BY_KIND: dict[str, SourceSpec] = {spec.kind: spec for spec in SPECS}


@dataclass(frozen=True)
class DataFile:
    """A data file found in a data directory."""

    spec: SourceSpec
    symbol: str
    path: Path


def discover(data_dir: Path, symbols: tuple[str, ...] | list[str] | None = None) -> list[DataFile]:
    """List the recognised data files in ``data_dir`` (sorted by kind, symbol, name).

    Parameters
    ----------
    data_dir:
        Root of a data directory laid out as described in this module.
    symbols:
        Keep only these base assets (``None``: all).
    """
    found: list[DataFile] = []
    wanted = None if symbols is None else {s.upper() for s in symbols}
    for spec in SPECS:
        folder = Path(data_dir) / spec.folder
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            match = spec.pattern.match(path.name)
            if match is None or not path.is_file():
                continue
            symbol = match.group(1)
            if wanted is None or symbol in wanted:
                found.append(DataFile(spec, symbol, path))
    return found


def relative_name(path: Path, data_dir: Path) -> str:
    """``path`` relative to ``data_dir`` with forward slashes (for messages and caches)."""
    try:
        return Path(path).relative_to(data_dir).as_posix()
    except ValueError:
        return str(path)
