"""The parameter file's perp IMF / MMF in the engine (``margin.bridge.perp_addons``)."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from margin.book import Book
from margin.bridge import methodology_from_parameters, perp_addons
from margin.engine import compute_margin
from margin.methodology import AddOnConfig
from margin.parameters import (
    ApcState,
    Haircut,
    ParameterSet,
    PerpMargin,
    Provenance,
    RiskParameters,
    ScanRange,
    TailMove,
    VolShock,
)

DAY = dt.date(2024, 6, 30)
PRICES = {"BTC": 60_000.0, "ETH": 3_000.0}
SCANS = {"BTC": (0.06, 0.07, 0.045, 0.05), "ETH": (0.08, 0.075, 0.06, 0.055)}


def _underlying(symbol: str, imf: float | None = None, mmf: float | None = None) -> RiskParameters:
    im_long, im_short, mm_long, mm_short = SCANS[symbol]
    return RiskParameters(
        underlying=symbol,
        as_of=DAY,
        horizon_days=1,
        im_confidence=0.99,
        mm_confidence=0.975,
        sigma=0.025,
        model="ewma",
        scan_im=ScanRange(long=im_long, short=im_short),
        scan_mm=ScanRange(long=mm_long, short=mm_short),
        vol_shock=VolShock(up=0.3, down=0.2),
        tails=(TailMove(move=-0.5, weight=0.1),),
        # a calibrated file: IMF / MMF = the larger IM / MM scan range
        perp=PerpMargin(
            imf=max(im_long, im_short) if imf is None else imf,
            mmf=max(mm_long, mm_short) if mmf is None else mmf,
            size_addon=1e-5,
        ),
        haircut=Haircut(im=0.1, mm=0.08, horizon_days=2),
        apc=ApcState(),
    )


def _set(**perps: tuple[float, float]) -> ParameterSet:
    return ParameterSet(
        as_of=DAY,
        effective_from=dt.datetime(2024, 7, 1, tzinfo=dt.UTC),
        horizon_days=1,
        im_confidence=0.99,
        mm_confidence=0.975,
        underlyings={s: _underlying(s, *perps.get(s, (None, None))) for s in PRICES},
        provenance=Provenance(model="ewma", data_digest="test", code_version="test"),
    )


def _perp_book() -> Book:
    """Perp-only accounts: long and short BTC, long ETH, and both in one account."""
    instruments = pd.DataFrame(
        [{"instrument": f"{u}-PERP", "kind": "linear_perp", "underlying": u} for u in PRICES]
    )
    market = pd.DataFrame({"instrument": [f"{u}-PERP" for u in PRICES], "mark": [*PRICES.values()]})
    unders = pd.DataFrame({"underlying": list(PRICES), "index": list(PRICES.values())})
    positions = pd.DataFrame(
        [
            ("long_btc", "BTC-PERP", 1.0),
            ("short_btc", "BTC-PERP", -1.0),
            ("long_eth", "ETH-PERP", 10.0),
        ],
        columns=["account", "instrument", "quantity"],
    )
    coll = pd.DataFrame(
        [(a, "USD", 1e6) for a in ("long_btc", "short_btc", "long_eth")],
        columns=["account", "asset", "amount"],
    )
    return Book.from_frames(instruments, positions, coll, market, unders)


def _up(x: float) -> float:
    return math.ceil(round(x * 100, 6)) / 100


def test_calibrated_file_leaves_the_engine_add_ons_unchanged() -> None:
    params = _set()
    engine = AddOnConfig()
    assert perp_addons(list(params.underlyings.values()), engine) is engine
    methodology = methodology_from_parameters(params, ["BTC", "ETH"])
    assert methodology.addons == engine
    # hand check: side's scan range plus the engine's perp contingency (previous result)
    res = compute_margin(_perp_book(), methodology).to_frame()
    btc = PRICES["BTC"]
    assert res.loc["long_btc", "im"] == pytest.approx(_up(btc * (0.06 + engine.perp_im)))
    assert res.loc["short_btc", "im"] == pytest.approx(_up(btc * (0.07 + engine.perp_im)))
    assert res.loc["long_btc", "mm"] == pytest.approx(_up(btc * (0.045 + engine.perp_mm)))


def test_higher_perp_imf_raises_im_of_perp_accounts() -> None:
    base = compute_margin(_perp_book(), methodology_from_parameters(_set(), ["BTC"])).to_frame()
    # BTC IMF 10% against a larger IM scan range of 7%: 3% of notional more
    params = _set(BTC=(0.10, 0.08))
    methodology = methodology_from_parameters(params, ["BTC"])
    assert methodology.addons.perp_im == pytest.approx(AddOnConfig().perp_im + 0.03)
    assert methodology.addons.perp_mm == pytest.approx(AddOnConfig().perp_mm + 0.03)
    res = compute_margin(_perp_book(), methodology).to_frame()
    btc = PRICES["BTC"]
    for account in ("long_btc", "short_btc"):
        assert res.loc[account, "im"] == pytest.approx(base.loc[account, "im"] + 0.03 * btc)
        assert res.loc[account, "mm"] == pytest.approx(base.loc[account, "mm"] + 0.03 * btc)
    # the side with the larger range is charged the file's IMF plus the engine's contingency
    assert res.loc["short_btc", "im"] == pytest.approx(_up(btc * (0.10 + AddOnConfig().perp_im)))


def test_one_underlying_excess_applies_to_every_perp_of_the_book() -> None:
    """The engine's perp contingency is one fraction: the largest excess, conservative."""
    both = methodology_from_parameters(_set(ETH=(0.12, 0.06)), ["BTC", "ETH"])
    assert both.addons.perp_im == pytest.approx(AddOnConfig().perp_im + 0.04)
    assert both.addons.perp_mm == pytest.approx(AddOnConfig().perp_mm)  # MMF = MM range
    only_btc = methodology_from_parameters(_set(ETH=(0.12, 0.06)), ["BTC"])
    assert only_btc.addons == AddOnConfig()


def test_custom_engine_add_ons_are_kept() -> None:
    engine = AddOnConfig(perp_im=0.01, perp_mm=0.004, concentration=0.2)
    methodology = methodology_from_parameters(_set(BTC=(0.09, 0.05)), ["BTC"], addons=engine)
    assert methodology.addons.perp_im == pytest.approx(0.01 + 0.02)
    assert methodology.addons.perp_mm == pytest.approx(0.004)
    assert methodology.addons.concentration == 0.2


@settings(max_examples=20, deadline=None)
@given(imf=st.floats(0.0, 0.5), extra=st.floats(0.0, 0.4))
def test_im_never_falls_as_imf_rises(imf: float, extra: float) -> None:
    lo, hi = min(0.07 + imf, 1.0), min(0.07 + imf + extra, 1.0)
    a = compute_margin(_perp_book(), methodology_from_parameters(_set(BTC=(lo, 0.05)), ["BTC"]))
    b = compute_margin(_perp_book(), methodology_from_parameters(_set(BTC=(hi, 0.05)), ["BTC"]))
    assert (b.im >= a.im).all()
    # every perp of the book pays the excess: (hi - lo) x its notional, to the cent
    rise = (b.to_frame()["im"] - a.to_frame()["im"]).sort_index()
    notional = pd.Series({"long_btc": 60_000.0, "long_eth": 30_000.0, "short_btc": 60_000.0})
    assert rise.to_numpy() == pytest.approx(((hi - lo) * notional).to_numpy(), abs=0.011)
