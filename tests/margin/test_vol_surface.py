"""Vol surface interpolation: linear in k per expiry, linear total variance in t, flat beyond."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from margin.errors import VolSurfaceError
from margin.pricing import implied_vol
from margin.vol_surface import VolSurface

SURFACE = VolSurface.from_points(
    expiry=[0.1, 0.1, 0.1, 0.5, 0.5],
    log_moneyness=[-0.2, 0.0, 0.2, -0.2, 0.2],
    vol=[0.8, 0.6, 0.7, 0.5, 0.6],
)


def test_on_quoted_expiry_linear_in_log_moneyness_and_flat_beyond() -> None:
    got = SURFACE.vol(0.1, [-0.2, -0.1, 0.0, 0.1, 0.2, -1.0, 1.0])
    np.testing.assert_allclose(got, [0.8, 0.7, 0.6, 0.65, 0.7, 0.8, 0.7])


def test_between_expiries_linear_in_total_variance() -> None:
    t = 0.3
    w1, w2 = 0.6**2 * 0.1, 0.55**2 * 0.5  # at k = 0: 0.6 on the first, 0.55 on the second
    expected = np.sqrt((w1 + (t - 0.1) / 0.4 * (w2 - w1)) / t)
    assert SURFACE.vol(t, 0.0) == pytest.approx(expected)


def test_flat_in_expiry_outside_the_quoted_range() -> None:
    assert SURFACE.vol(0.01, 0.0) == pytest.approx(0.6)
    assert SURFACE.vol(3.0, 0.2) == pytest.approx(0.6)
    out = SURFACE.vol(np.array([[0.01], [3.0]]), np.array([[-0.2, 0.2]]))
    np.testing.assert_allclose(out, [[0.8, 0.7], [0.5, 0.6]])


def test_invalid_quotes_are_rejected() -> None:
    with pytest.raises(VolSurfaceError, match="quote 1"):
        VolSurface.from_points([0.1, -0.1], [0.0, 0.0], [0.5, 0.5])
    with pytest.raises(VolSurfaceError, match="at least one"):
        VolSurface.from_points([], [], [])


def test_surface_from_the_real_eth_snapshot(shared_data_dir: object) -> None:
    from pathlib import Path

    path = (
        Path(str(shared_data_dir)) / "deribit_options_snapshots/ETH_options_2024-01-08T1119Z.csv.gz"
    )
    snap = pd.read_csv(path)
    asof = pd.to_datetime(snap["creation_timestamp"].iloc[0], unit="ms", utc=True)
    expiry = pd.to_datetime(snap["expire_date"], format="%d%b%y", utc=True) + pd.Timedelta(hours=8)
    t = ((expiry - asof).dt.total_seconds() / (365 * 86400)).to_numpy()
    fwd = snap["underlying_price"].to_numpy(dtype=float)
    strike = snap["strike_price"].to_numpy(dtype=float)
    # Deribit marks are in coin (USD value / underlying forward); mark vols are Black-76
    price_usd = snap["mark_price"].to_numpy(dtype=float) * fwd
    iv = implied_vol(price_usd, fwd, strike, t, 0.0, (snap["option_type"] == "C").to_numpy())
    quoted = snap["mark_iv_b76_derived"].to_numpy(dtype=float) / 100.0
    ok = np.isfinite(iv) & (t > 2 / 365) & (np.abs(np.log(strike / fwd)) < 0.5)
    # our inversion of the published marks agrees with the published Black-76 vols
    np.testing.assert_allclose(iv[ok], quoted[ok], rtol=0.03)
    surface = VolSurface.from_points(t[ok], np.log(strike / fwd)[ok], quoted[ok])
    np.testing.assert_allclose(surface.vol(t[ok], np.log(strike / fwd)[ok]), quoted[ok], rtol=0.15)
    assert np.all(np.isfinite(surface.vol(np.linspace(0.001, 2.0, 50), 0.0)))
