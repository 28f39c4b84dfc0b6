"""A published parameter set → the engine methodology (field translation, no calibration)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipelines.tasks import methodology_for


def test_fields_are_carried_over(make_params: Callable[..., Any]) -> None:
    params = make_params()
    methodology = methodology_for(params, ["BTC", "ETH"])
    btc = params.underlyings["BTC"]
    grid = methodology.scenarios["BTC"]
    assert grid.price_range == max(btc.scan_im.long, btc.scan_im.short)
    assert grid.vol_up == btc.vol_shock.up and grid.vol_down == btc.vol_shock.down
    assert grid.tail_moves == tuple(t.move for t in btc.tails)
    assert grid.tail_weights == tuple(t.weight for t in btc.tails)
    # MM = IM scenario part × the largest MM/IM ratio of the set (0.9 × 1.1 / 1.1 here)
    assert methodology.mm_loss_factor == pytest.approx(0.9 / 1.1)
    assert methodology.haircuts_mm["ETH"] == params.underlyings["ETH"].haircut.mm
    assert methodology.offsets.mode == "none"  # the test set carries no correlations


def test_an_underlying_without_parameters_is_a_clear_error(
    make_params: Callable[..., Any],
) -> None:
    with pytest.raises(ValueError, match="no parameters for underlying SOL"):
        methodology_for(make_params(), ["BTC", "SOL"])
