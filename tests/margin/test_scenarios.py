"""Scenario grids, vol shocks and risk arrays by full revaluation."""

from __future__ import annotations

import numpy as np
import pytest
from engine_books import BTC, T30, VOL, make_book

from margin.methodology import Methodology, ScenarioConfig
from margin.pricing import black76_price
from margin.scenarios import (
    VOL_DOWN,
    VOL_UP,
    build_risk_arrays,
    scenario_set,
    shocked_vols,
    vol_shock_multiplier,
)


def test_default_grid_has_35_scenarios() -> None:
    scen = scenario_set(ScenarioConfig(), "BTC")
    assert len(scen) == 9 * 3 + 8
    np.testing.assert_allclose(np.unique(scen.spot_moves[:27]), np.linspace(-0.16, 0.16, 9))
    assert scen.labels[0] == "BTC:-16.0%:vol_up"
    assert scen.labels[-1] == "BTC:+500.0%:vol_up:w0.024"
    # linear-equivalent dampening: weight x |move| = 0.12 on every tail
    np.testing.assert_allclose(scen.weights[27:] * np.abs(scen.spot_moves[27:]), 0.12, atol=0.0012)


def test_vol_shock_multipliers_match_the_published_paradex_table() -> None:
    # Paradex BTC: +40% / -22% at 30 DTE, powers 0.30 / 0.13, DTE floor 1 (research note 2.3)
    cfg = ScenarioConfig(vol_up=0.4, vol_down=0.22, min_vol_up=0.0)
    dte = np.array([1.0, 7.0, 14.0, 30.0, 60.0, 180.0])
    vols = shocked_vols(np.ones(6), dte, np.array([VOL_UP, VOL_DOWN]), cfg)
    np.testing.assert_allclose(
        vols[:, 0], [2.1097, 1.6190, 1.5028, 1.4000, 1.3655, 1.3169], atol=5e-5
    )
    np.testing.assert_allclose(
        vols[:, 1], [0.3897, 0.6596, 0.7235, 0.7800, 0.7990, 0.8257], atol=5e-5
    )
    # DTE floor: below one day the multiplier stays at its one-day value
    np.testing.assert_allclose(vol_shock_multiplier(np.array([0.1, 1.0]), cfg), 30.0**0.3)


def test_shocked_vol_floors() -> None:
    cfg = ScenarioConfig(vol_up=0.5, vol_down=0.99, min_vol_up=0.45, min_vol=0.05)
    out = shocked_vols(np.array([0.2]), np.array([30.0]), np.array([VOL_UP, 0, VOL_DOWN]), cfg)
    np.testing.assert_allclose(out, [[0.45, 0.2, 0.05]])


def test_risk_arrays_full_revaluation() -> None:
    book = make_book([("a", "BTC-PERP", 1.0)])
    m = Methodology()
    risk = build_risk_arrays(book, m)
    scen = risk.sets[0]
    ids = list(book.instruments.ids[risk.inst_of[0]])
    r = risk.risk_inst_scen[0]
    w_moves = scen.spot_moves * scen.weights
    np.testing.assert_allclose(r[ids.index("BTC-PERP")], BTC * w_moves)
    # inverse: (N / S)(1 - 1/s) coins at the shocked price S s = N (s - 1) USD
    s = 1.0 + scen.spot_moves
    inverse = (10.0 / BTC) * (1.0 - 1.0 / s) * BTC * s * scen.weights
    np.testing.assert_allclose(r[ids.index("BTC-INV")], inverse, rtol=1e-12)
    # option: Black-76 at the shocked forward and shocked vol minus the unshocked value
    call = r[ids.index("BTC-55000-C")]
    mult = 1.0  # 30 DTE: (30 / 30) ** 0.13
    up = max(VOL * (1 + 0.5 * mult), 0.40)
    j = 0  # -16 %, vol up
    expected = black76_price(BTC * 0.84, 55_000, T30, up, 0.0, True) - black76_price(
        BTC, 55_000, T30, VOL, 0.0, True
    )
    assert call[j] == pytest.approx(expected, rel=1e-12)
    tail = len(scen) - 1  # +500 % with weight 0.024
    expected_tail = 0.024 * (
        black76_price(BTC * 6.0, 55_000, T30, up, 0.0, True)
        - black76_price(BTC, 55_000, T30, VOL, 0.0, True)
    )
    assert call[tail] == pytest.approx(expected_tail, rel=1e-12)
    # unshocked scenario (0 %, vol unchanged) has exactly zero P&L
    zero = np.flatnonzero((scen.spot_moves == 0) & (scen.vol_mode == 0))[0]
    np.testing.assert_array_equal(r[:, zero], 0.0)
    assert risk.n_scenarios == 70 and len(risk.labels) == 70


def test_filtered_historical_moves_rescale_by_volatility() -> None:
    from margin.scenarios import filtered_historical_moves

    rng = np.random.default_rng(3)
    calm = rng.normal(0.0, 0.01, (200, 2))
    wild = rng.normal(0.0, 0.05, (200, 2))
    r = np.vstack([calm, wild])
    moves = np.asarray(filtered_historical_moves(r, current_vol=[0.02, 0.02]))
    assert moves.shape == (380, 2)
    # standardized by their own regime's vol, both halves come out near the current 2 %
    z_calm = np.log1p(moves[100:180]).std(axis=0)
    z_wild = np.log1p(moves[300:]).std(axis=0)
    np.testing.assert_allclose(z_calm, 0.02, rtol=0.25)
    np.testing.assert_allclose(z_wild, 0.02, rtol=0.25)
    # the first move is the first post-seed return scaled by the seed sample vol (by hand)
    v = r[:20].var(axis=0)
    for t in range(20):
        v = 0.94 * v + 0.06 * r[t] ** 2
    np.testing.assert_allclose(moves[0], np.expm1(r[20] / np.sqrt(v) * 0.02))
    # no look-ahead: truncating the future leaves the earlier moves unchanged
    short = np.asarray(filtered_historical_moves(r[:300], current_vol=[0.02, 0.02]))
    np.testing.assert_array_equal(short, moves[:280])
    with pytest.raises(ValueError, match="finite"):
        filtered_historical_moves(r[:10])


def test_joint_offsets_from_real_btc_eth_history(shared_data_dir: object) -> None:
    import pandas as pd

    from margin.engine import compute_margin
    from margin.scenarios import filtered_historical_moves

    closes = {}
    for sym in ("BTC", "ETH"):
        frame = pd.read_csv(f"{shared_data_dir}/binance_spot_1h/{sym}USDT_1h.csv.gz")
        frame["day"] = frame["timestamp"].str[:10]
        closes[sym] = frame.groupby("day")["close"].last()
    daily = pd.DataFrame(closes).dropna().loc["2023-01-01":"2024-12-31"]
    r = np.diff(np.log(daily.to_numpy()), axis=0)
    moves = filtered_historical_moves(r)
    m = Methodology(
        offsets={
            "mode": "joint",
            "underlyings": ("BTC", "ETH"),
            "joint_moves": moves,
            "confidence": 0.99,
        }
    )
    # long BTC / short ETH of equal notional: BTC and ETH co-move, so the pair offsets
    book = make_book([("a", "BTC-PERP", 2.0), ("a", "ETH-PERP", -40.0)])
    res = compute_margin(book, m)
    assert res.standalone_sum[0] == pytest.approx(32_000.0)
    assert 0.2 * 32_000 < res.scenario_part[0] < 32_000.0
