"""Shared fixtures of the pipelines tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest


def _params(scale: float = 1.0, zone: str = "yellow") -> Any:
    from margin.parameters import (
        ApcState,
        BacktestRow,
        Haircut,
        ParameterSet,
        PerpMargin,
        Provenance,
        RiskParameters,
        ScanRange,
        TailMove,
        VolShock,
    )

    day = dt.date(2024, 6, 30)
    under = {}
    for symbol, im in (("BTC", 0.06), ("ETH", 0.08)):
        under[symbol] = RiskParameters(
            underlying=symbol,
            as_of=day,
            horizon_days=1,
            im_confidence=0.99,
            mm_confidence=0.975,
            sigma=0.025,
            model="har",
            scan_im=ScanRange(long=im * scale, short=im * scale * 1.1),
            scan_mm=ScanRange(long=im * scale * 0.8, short=im * scale * 0.9),
            vol_shock=VolShock(up=0.3, down=0.2),
            tails=(TailMove(move=-0.5, weight=0.2),),
            perp=PerpMargin(imf=0.07, mmf=0.05, size_addon=1e-5),
            haircut=Haircut(im=0.1, mm=0.08, horizon_days=2),
            apc=ApcState(),
        )
    row = {
        "model": "champion", "symbol": "BTC", "level": "IM", "side": "long", "n": 90,
        "breaches": 3, "breach_rate": 3 / 90, "expected_rate": 0.01, "kupiec_p": 0.04,
        "christoffersen_ind_p": 0.5, "christoffersen_cc_p": 0.1, "zone": zone,
        "avg_margin": 0.06, "peak_to_trough": 1.2, "max_increase_1d": 0.1,
        "max_increase_5d": 0.2, "max_increase_30d": 0.3,
    }  # fmt: skip
    return ParameterSet(
        as_of=day,
        effective_from=dt.datetime(2024, 7, 1, tzinfo=dt.UTC),
        horizon_days=1,
        im_confidence=0.99,
        mm_confidence=0.975,
        underlyings=under,
        backtest_summary=(BacktestRow(**row),),
        provenance=Provenance(model="har", data_digest="abc", code_version="test"),
    )


@pytest.fixture()
def make_params() -> Callable[..., Any]:
    """Build a small BTC/ETH ``ParameterSet`` (IM ranges scaled by ``scale``)."""
    return _params
