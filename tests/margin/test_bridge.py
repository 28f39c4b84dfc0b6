"""Parameters → engine bridge: asymmetric grids, tails per side, MM factor, errors, round trip."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from margin.bridge import MissingParametersError, methodology_from_parameters, scan_grid
from margin.calibration import (
    CalibrationConfig,
    UnderlyingInputs,
    calibrate_offsets,
    calibrate_underlying,
)
from margin.engine import compute_margin
from margin.methodology import AddOnConfig, ScenarioConfig
from margin.parameters import ParameterSet, Provenance
from margin.scenarios import scenario_set

AS_OF = dt.date(2023, 12, 29)


def test_symmetric_grid_unchanged_and_asymmetric_grid_per_side() -> None:
    base = ScenarioConfig(price_range=0.1, n_price_steps=2)
    same = ScenarioConfig(
        price_range=0.1, price_range_down=0.1, price_range_up=0.1, n_price_steps=2
    )
    np.testing.assert_array_equal(
        scenario_set(base, "X").spot_moves, scenario_set(same, "X").spot_moves
    )
    asym = ScenarioConfig(
        price_range=0.2, price_range_down=0.05, price_range_up=0.2, n_price_steps=2
    )
    grid = np.unique(scenario_set(asym, "X").spot_moves[:15])
    np.testing.assert_allclose(grid, [-0.05, -0.025, 0.0, 0.1, 0.2])
    scaled = asym.scaled(2.0)
    assert (scaled.range_down, scaled.range_up) == pytest.approx((0.1, 0.4))


def _ewma_variance(ret: pd.Series, lam: float = 0.94) -> pd.Series:
    """One-day variance forecast made at each close: RiskMetrics EWMA of squared returns."""
    r2 = ret.fillna(0.0) ** 2
    return r2.ewm(alpha=1 - lam, adjust=False).mean().clip(lower=1e-8)


@pytest.fixture(scope="module")
def real_parameters(shared_data_dir: Path) -> ParameterSet:
    from features.history import load_market_history
    from features.matrix import build_daily_panel
    from margin.params import utc_midnight_after

    history = load_market_history(shared_data_dir, ["BTC", "ETH"], start="2022-06-01", end=AS_OF)
    panel = build_daily_panel(history, ["BTC", "ETH"])
    config = CalibrationConfig(min_residuals=200)
    underlyings, returns = {}, {}
    for symbol in ("BTC", "ETH"):
        daily = panel.xs(symbol, level="symbol")
        variance = _ewma_variance(daily["ret"])
        inputs = UnderlyingInputs(symbol, daily, variance, "ewma")
        underlyings[symbol] = calibrate_underlying(inputs, AS_OF, config)
        returns[symbol] = daily["ret"]
    return ParameterSet(
        as_of=AS_OF,
        effective_from=utc_midnight_after(AS_OF),
        horizon_days=1,
        im_confidence=0.99,
        mm_confidence=0.975,
        underlyings=underlyings,
        offsets=calibrate_offsets(pd.DataFrame(returns).dropna(), config),
        provenance=Provenance(model="ewma", data_digest="test", code_version="test"),
    )


def _book(positions: list[tuple[str, str, float]], btc: float, eth: float):  # type: ignore[no-untyped-def]
    from margin.book import Book

    instruments = pd.DataFrame(
        [
            {"instrument": "BTC-PERP", "kind": "linear_perp", "underlying": "BTC"},
            {"instrument": "ETH-PERP", "kind": "linear_perp", "underlying": "ETH"},
        ]
    )
    market = pd.DataFrame({"instrument": ["BTC-PERP", "ETH-PERP"], "mark": [btc, eth]})
    underlyings = pd.DataFrame({"underlying": ["BTC", "ETH"], "index": [btc, eth]})
    pos = pd.DataFrame(positions, columns=["account", "instrument", "quantity"])
    coll = pd.DataFrame(
        [(a, "USD", 1e6) for a in dict.fromkeys(p[0] for p in positions)],
        columns=["account", "asset", "amount"],
    )
    return Book.from_frames(instruments, pos, coll, market, underlyings)


def test_round_trip_signed_file_to_engine(real_parameters: ParameterSet, tmp_path: Path) -> None:
    from margin.keys import generate_keypair, load_private_key, load_public_key
    from margin.params import load, write_parameter_set

    private_path, public_path = generate_keypair(tmp_path / "keys")
    private, public = load_private_key(private_path), load_public_key(public_path)
    written = write_parameter_set(real_parameters, tmp_path / "params", private)
    loaded = load(written.folder, verify=True, public_key=public)
    # the file stores 12 significant digits
    for u in ("BTC", "ETH"):
        assert loaded.underlyings[u].scan_im.long == pytest.approx(
            real_parameters.underlyings[u].scan_im.long, rel=1e-11
        )

    btc_p, eth_p = loaded.underlyings["BTC"], loaded.underlyings["ETH"]
    # real data: the two sides differ, so the grid must be asymmetric
    assert btc_p.scan_im.long != btc_p.scan_im.short
    methodology = methodology_from_parameters(loaded, ["BTC", "ETH"])
    grid = methodology.scenario_config("BTC")
    assert (grid.range_down, grid.range_up) == (btc_p.scan_im.long, btc_p.scan_im.short)

    btc, eth = 42_000.0, 2_300.0
    book = _book(
        [
            ("long_btc", "BTC-PERP", 1.0),
            ("short_btc", "BTC-PERP", -1.0),
            ("long_eth", "ETH-PERP", 10.0),
            ("pair", "BTC-PERP", 1.0),
            ("pair", "ETH-PERP", -btc / eth),
        ],
        btc,
        eth,
    )
    res = compute_margin(book, methodology).to_frame()
    add = AddOnConfig()
    # hand check: loss = price x side's IM scan range, plus the perp contingency
    # (the minimum delta charge, 2% of notional, is below every scan range here)
    assert min(btc_p.scan_im.long, btc_p.scan_im.short) > add.min_delta_net

    def up(x: float) -> float:
        return math.ceil(round(x * 100, 6)) / 100

    assert res.loc["long_btc", "im"] == pytest.approx(
        up(btc * btc_p.scan_im.long + btc * add.perp_im)
    )
    assert res.loc["short_btc", "im"] == pytest.approx(
        up(btc * btc_p.scan_im.short + btc * add.perp_im)
    )
    assert res.loc["long_eth", "im"] == pytest.approx(
        up(10 * eth * eth_p.scan_im.long + 10 * eth * add.perp_im)
    )
    # MM from the MM scan ranges of each side
    assert res.loc["long_btc", "mm"] == pytest.approx(
        up(btc * btc_p.scan_mm.long + btc * add.perp_mm)
    )
    assert res.loc["short_btc", "mm"] == pytest.approx(
        up(btc * btc_p.scan_mm.short + btc * add.perp_mm)
    )
    # the one-scan approximation: the largest MM/IM ratio times the IM scenario part
    approx = methodology_from_parameters(loaded, ["BTC", "ETH"], mm="loss_factor")
    ratio = approx.mm_loss_factor
    assert ratio == pytest.approx(
        max(
            getattr(p.scan_mm, s) / getattr(p.scan_im, s)
            for p in (btc_p, eth_p)
            for s in ("long", "short")
        )
    )
    res_approx = compute_margin(book, approx).to_frame()
    assert res_approx.loc["long_btc", "mm"] == pytest.approx(
        up(ratio * btc * btc_p.scan_im.long + btc * add.perp_mm)
    )
    # conservative on one-underlying linear positions (not in general: offsets are non-linear)
    single = ["long_btc", "short_btc", "long_eth"]
    assert (res_approx.loc[single, "mm"] >= res.loc[single, "mm"]).all()
    np.testing.assert_array_equal(res_approx["im"], res["im"])
    # the pair gets a capped correlation offset: below the stand-alone sum, above 20% of it
    pair = res.loc["pair"]
    assert loaded.offsets is not None
    assert pair["scenario_part"] < pair["standalone_sum"]
    assert pair["scenario_part"] >= (1 - loaded.offsets.offset_cap) * pair["standalone_sum"] - 1e-6


def test_whatif_and_liquidation_flag_use_the_mm_grids(real_parameters: ParameterSet) -> None:
    from margin.whatif import WhatIf

    methodology = methodology_from_parameters(real_parameters, ["BTC", "ETH"])
    book = _book(
        [("a", "BTC-PERP", 2.0), ("a", "ETH-PERP", -20.0), ("b", "ETH-PERP", 5.0)], 4e4, 2e3
    )
    res = compute_margin(book, methodology)
    whatif = WhatIf(book, methodology)
    for row in range(book.n_accounts):
        q = whatif.margin_after(row)
        assert (q.im, q.mm, q.liquidatable) == (res.im[row], res.mm[row], res.liquidatable[row])
    alone = compute_margin(book, methodology.mm_view()).mm  # type: ignore[arg-type]
    np.testing.assert_array_equal(res.mm, alone)
    np.testing.assert_array_equal(res.im, compute_margin(book, methodology.im_view()).im)
    assert (res.mm < res.im).all()


def test_tail_weights_follow_each_side(real_parameters: ParameterSet) -> None:
    p = real_parameters.underlyings["BTC"]
    grid = methodology_from_parameters(real_parameters, ["BTC"]).scenario_config("BTC")
    for move, weight in zip(grid.tail_moves, grid.tail_weights, strict=True):
        side = p.scan_im.long if move < 0 else p.scan_im.short
        assert weight * abs(move) <= side + 1e-12
        assert weight <= next(t.weight for t in p.tails if t.move == move)


def test_missing_underlying_is_a_clear_error(real_parameters: ParameterSet) -> None:
    with pytest.raises(MissingParametersError, match="'SOL'") as info:
        methodology_from_parameters(real_parameters, ["BTC", "SOL"])
    assert isinstance(info.value, ValueError)


@settings(max_examples=25, deadline=None)
@given(
    down=st.floats(0.01, 0.9),
    up=st.floats(0.01, 3.0),
    qty=st.floats(-5.0, 5.0).filter(lambda q: abs(q) > 1e-3),
)
def test_linear_position_is_charged_its_side_range(down: float, up: float, qty: float) -> None:
    """A perp's scenario loss is price x the range of the side it loses on, tails included."""
    from margin.calibration import DEFAULT_TAIL_MOVES, tail_weights
    from margin.parameters import VolShock

    grid = scan_grid(
        down, up, VolShock(up=0.5, down=0.3), tail_weights(DEFAULT_TAIL_MOVES, max(down, up))
    )
    scen = scenario_set(grid, "X")
    worst = -np.min(qty * scen.spot_moves * scen.weights)
    assert worst == pytest.approx(abs(qty) * (down if qty > 0 else up), rel=1e-12)
