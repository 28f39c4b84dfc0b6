"""Instrument kinds, the instruments table and per-scenario valuation (full revaluation).

Units
-----
- Every value and P&L returned here is in **USD** (the quote currency) per contract.
- ``contract_size``: underlying units (coins) per contract for spot, linear perps, linear
  futures and options; **USD notional** per contract for inverse (coin-margined) perps and
  futures, as on Deribit (a BTC inverse perp contract is 10 USD).
- A scenario moves the underlying index, every mark and every forward by the same multiplier
  ``s = 1 + m`` (``m`` a decimal move), and may shock the implied vol.

Inverse contracts
-----------------
An inverse contract of USD notional ``N`` opened at price ``P`` pays, in coin, after the price
moves to ``P s``::

    pnl_coin = (N / P) * (1 - 1 / s)

Where the settlement currency is the coin, the engine converts that coin P&L to USD at the
**shocked** price ``P s`` (the price at which the coin would be sold in that scenario), giving
``pnl_usd = N * (s - 1)``: in USD an inverse contract is linear in ``s`` with notional ``N``.
What makes coin-margined books different is that their coin collateral moves with the price
too; the engine shocks that collateral in the same scenarios, so a short inverse perp against
coin collateral (a "synthetic dollar") shows no scenario loss.

Coin-settled options are quoted in coin (``V_usd / S``); converted back at the shocked index they
give the same USD value as a USD-settled option, which is what the risk arrays hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike

from margin.pricing import black76_greeks, black76_price
from margin.typing import BoolArray, FloatArray, IntArray, StrArray

__all__ = [
    "DELTA_ONE_KINDS",
    "InstrumentKind",
    "InstrumentTable",
    "instrument_greeks",
    "instrument_mtm",
    "instrument_pnl",
    "instrument_value",
]


class InstrumentKind(IntEnum):
    """Kinds of instrument the engine values."""

    SPOT = 0
    LINEAR_PERP = 1
    INVERSE_PERP = 2
    LINEAR_FUTURE = 3
    INVERSE_FUTURE = 4
    OPTION = 5

    @classmethod
    def parse(cls, name: str) -> InstrumentKind:
        """Kind from its lower-case name (``"linear_perp"``, ``"option"``, ...)."""
        return cls[name.strip().upper()]


DELTA_ONE_KINDS = (
    InstrumentKind.SPOT,
    InstrumentKind.LINEAR_PERP,
    InstrumentKind.INVERSE_PERP,
    InstrumentKind.LINEAR_FUTURE,
    InstrumentKind.INVERSE_FUTURE,
)
_INVERSE = (InstrumentKind.INVERSE_PERP, InstrumentKind.INVERSE_FUTURE)
_PERPS = (InstrumentKind.LINEAR_PERP, InstrumentKind.INVERSE_PERP)
_LINEAR = (InstrumentKind.SPOT, InstrumentKind.LINEAR_PERP, InstrumentKind.LINEAR_FUTURE)


@dataclass(frozen=True)
class InstrumentTable:
    """Static definition of the tradable instruments (one row per instrument).

    Attributes
    ----------
    ids : instrument names, unique.
    kind : :class:`InstrumentKind` codes.
    underlying : index into ``underlyings`` for each instrument.
    underlyings : underlying names (``"BTC"``, ...), in code order.
    strike : option strike in USD (NaN for other kinds).
    expiry_years : time to expiry in years (ACT/365); NaN for spot and perps.
    is_call : True for calls (False for puts and non-options).
    coin_settled : True for inverse contracts and coin-settled options.
    contract_size : coins per contract, or USD notional per contract for inverse kinds.
    """

    ids: StrArray
    kind: IntArray
    underlying: IntArray
    underlyings: tuple[str, ...]
    strike: FloatArray
    expiry_years: FloatArray
    is_call: BoolArray
    coin_settled: BoolArray
    contract_size: FloatArray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: IntArray) -> InstrumentTable:
        """Sub-table of the given rows (same underlying codes)."""
        return InstrumentTable(
            ids=self.ids[rows],
            kind=self.kind[rows],
            underlying=self.underlying[rows],
            underlyings=self.underlyings,
            strike=self.strike[rows],
            expiry_years=self.expiry_years[rows],
            is_call=self.is_call[rows],
            coin_settled=self.coin_settled[rows],
            contract_size=self.contract_size[rows],
        )

    @property
    def is_option(self) -> BoolArray:
        """Mask of options."""
        return np.asarray(self.kind == InstrumentKind.OPTION)

    @property
    def is_perp(self) -> BoolArray:
        """Mask of (linear and inverse) perpetuals."""
        return np.isin(self.kind, _PERPS)

    @property
    def is_inverse(self) -> BoolArray:
        """Mask of inverse (coin-margined, USD-notional) perps and futures."""
        return np.isin(self.kind, _INVERSE)

    @property
    def dte_days(self) -> FloatArray:
        """Days to expiry (NaN for undated instruments)."""
        return np.asarray(self.expiry_years * 365.0)


def _col(a: ArrayLike) -> FloatArray:
    return np.asarray(a, dtype=np.float64)


def instrument_value(
    table: InstrumentTable,
    mark: ArrayLike,
    forward: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    spot_mult: ArrayLike,
) -> FloatArray:
    """Value per contract in USD after moving every price by ``spot_mult`` (full revaluation).

    Parameters
    ----------
    table : InstrumentTable
        The instruments (length ``n``).
    mark, forward, rate : array_like, shape (n,)
        Per instrument: USD mark, USD forward (used by options) and annual decimal rate.
    vol : array_like, shape (n,) or (n, k)
        Annualised decimal vol used for options (per scenario when 2-D).
    spot_mult : array_like, shape (n, k)
        Price multiplier ``s = 1 + m`` per instrument and scenario.

    Returns
    -------
    ndarray, shape (n, k)
        For options the Black-76 value at ``forward * s``; for spot ``mark * s``; for perps
        and futures the variation ``mark * (s - 1)`` (linear) or the inverse P&L converted at
        the shocked price (module docstring), since their MTM is settled into collateral.
    """
    s = np.atleast_2d(np.asarray(spot_mult, dtype=np.float64))
    kind = table.kind[:, None]
    size = table.contract_size[:, None]
    m = _col(mark)[:, None]
    out = np.zeros(np.broadcast_shapes((len(table), 1), s.shape))
    is_inv = np.isin(kind, _INVERSE)
    linear = np.isin(kind, (InstrumentKind.LINEAR_PERP, InstrumentKind.LINEAR_FUTURE))
    out = np.where(kind == InstrumentKind.SPOT, size * m * s, out)
    out = np.where(linear, size * m * (s - 1.0), out)
    # inverse: coin P&L (N / P)(1 - 1/s) converted to USD at the shocked price P s
    safe_m = np.where(is_inv, m, 1.0)
    pnl_coin = (size / safe_m) * (1.0 - 1.0 / s)
    out = np.where(is_inv, pnl_coin * (safe_m * s), out)
    rows = np.flatnonzero(table.kind == InstrumentKind.OPTION)
    if rows.size:
        v = np.asarray(vol, dtype=np.float64)
        v_rows = v[rows] if v.ndim == 2 else v[rows][:, None]
        usd_value = black76_price(
            _col(forward)[rows][:, None] * s[rows],
            table.strike[rows][:, None],
            table.expiry_years[rows][:, None],
            v_rows,
            _col(rate)[rows][:, None],
            table.is_call[rows][:, None],
        )
        # A coin-settled option is worth usd_value / (S s) coins, converted back at S s: the
        # USD value is the same, so both settlements share this formula.
        out[rows] = table.contract_size[rows][:, None] * usd_value
    return np.asarray(out)


def instrument_mtm(table: InstrumentTable, mark: ArrayLike) -> FloatArray:
    """Mark-to-market value per contract in USD: ``mark * size`` for spot and options, 0 else.

    Perps and futures carry no MTM here: their variation margin is assumed settled into the
    collateral balance at the mark.
    """
    has_value = np.isin(table.kind, (InstrumentKind.SPOT, InstrumentKind.OPTION))
    return np.where(has_value, _col(mark) * table.contract_size, 0.0)


def instrument_pnl(
    table: InstrumentTable,
    mark: ArrayLike,
    forward: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    spot_mult: ArrayLike,
    shocked_vol: ArrayLike,
) -> FloatArray:
    """Scenario P&L per contract in USD: value(shocked) - value(unshocked), full revaluation.

    ``spot_mult`` and ``shocked_vol`` have shape (n, k) for ``k`` scenarios; the other inputs
    are per instrument, shape (n,). Both values come from the same model, so the no-move,
    no-vol-change scenario has exactly zero P&L.
    """
    base = instrument_value(table, mark, forward, vol, rate, np.ones((len(table), 1)))
    shocked = instrument_value(table, mark, forward, shocked_vol, rate, spot_mult)
    return np.asarray(shocked - base)


def instrument_greeks(
    table: InstrumentTable,
    mark: ArrayLike,
    forward: ArrayLike,
    index: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Delta, gamma and vega per contract, in the engine's scenario convention.

    Returns
    -------
    delta : coins per contract, ``(dValue/ds) / S`` for a common price multiplier ``s``
        (so a long coin has delta 1; an inverse contract of notional N has ``N / S``).
    gamma : ``(d2Value/ds2) / S**2``, coins per USD per contract.
    vega : USD per contract for a change of 1.00 in decimal vol (options only).
    """
    spot = _col(index)
    m = _col(mark)
    f = _col(forward)
    kind = table.kind
    size = table.contract_size
    delta = np.zeros(len(table))
    gamma = np.zeros(len(table))
    vega = np.zeros(len(table))
    lin = np.isin(
        kind, (InstrumentKind.SPOT, InstrumentKind.LINEAR_PERP, InstrumentKind.LINEAR_FUTURE)
    )
    delta[lin] = size[lin] * m[lin] / spot[lin]
    inv = np.isin(kind, _INVERSE)
    delta[inv] = size[inv] / spot[inv]
    rows = np.flatnonzero(kind == InstrumentKind.OPTION)
    if rows.size:
        g = black76_greeks(
            f[rows],
            table.strike[rows],
            table.expiry_years[rows],
            _col(vol)[rows],
            _col(rate)[rows],
            table.is_call[rows],
        )
        ratio = f[rows] / spot[rows]
        delta[rows] = size[rows] * g.delta * ratio
        gamma[rows] = size[rows] * g.gamma * ratio**2
        vega[rows] = size[rows] * g.vega
    return delta, gamma, vega
