"""Implied-vol surfaces by expiry and log-moneyness, and per-instrument vol resolution.

Interpolation (documented contract)
-----------------------------------
A surface holds, for each quoted expiry ``t_i`` (years), a smile of vols (annualised decimal)
at sorted log-moneyness points ``k = ln(K / F)``. For a query ``(t, k)``:

1. on each quoted expiry the vol is **linear in log-moneyness** between quoted points and
   **flat** beyond the first and last point;
2. across expiries the **total variance** ``w = vol**2 * t`` is linear in ``t`` between the
   two neighbouring expiries, and ``vol = sqrt(w / t)``;
3. before the first and after the last expiry the vol is **flat** (the nearest expiry's vol at
   that ``k``).

Linear total variance across expiry keeps calendar spreads arbitrage-free whenever the
quoted smiles are; flat extrapolation never invents wings steeper than those quoted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from margin.errors import VolSurfaceError
from margin.typing import FloatArray

__all__ = ["VolSurface"]


@dataclass(frozen=True)
class VolSurface:
    """A vol surface of one underlying (see the module docstring for interpolation).

    Attributes
    ----------
    expiries : sorted expiries in years, shape (m,).
    log_moneyness : per expiry, sorted ``ln(K/F)`` points.
    vols : per expiry, annualised decimal vols at those points.
    """

    expiries: FloatArray
    log_moneyness: tuple[FloatArray, ...]
    vols: tuple[FloatArray, ...]

    @classmethod
    def from_points(cls, expiry: ArrayLike, log_moneyness: ArrayLike, vol: ArrayLike) -> VolSurface:
        """Build from scattered quotes (expiry in years, ``ln(K/F)``, annualised decimal vol).

        Duplicate (expiry, k) quotes are averaged. Raises :class:`VolSurfaceError` on empty
        input, non-finite values, non-positive expiry or vol.
        """
        frame = pd.DataFrame(
            {
                "t": np.asarray(expiry, dtype=np.float64),
                "k": np.asarray(log_moneyness, dtype=np.float64),
                "vol": np.asarray(vol, dtype=np.float64),
            }
        )
        if frame.empty:
            raise VolSurfaceError("a vol surface needs at least one quote")
        bad = ~np.isfinite(frame.to_numpy()).all(axis=1) | (frame["t"] <= 0) | (frame["vol"] <= 0)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise VolSurfaceError(
                f"vol surface quote {row} is invalid (expiry and vol must be finite and > 0)"
            )
        grouped = frame.groupby(["t", "k"], sort=True)["vol"].mean().reset_index()
        expiries = np.unique(grouped["t"].to_numpy())
        ks, vs = [], []
        for t in expiries:
            part = grouped[grouped["t"] == t]
            ks.append(part["k"].to_numpy(dtype=np.float64))
            vs.append(part["vol"].to_numpy(dtype=np.float64))
        return cls(expiries=expiries, log_moneyness=tuple(ks), vols=tuple(vs))

    def smile(self, i: int, k: FloatArray) -> FloatArray:
        """Vol on quoted expiry ``i`` at log-moneyness ``k`` (linear, flat beyond the ends)."""
        return np.interp(k, self.log_moneyness[i], self.vols[i])

    def vol(self, t: ArrayLike, log_moneyness: ArrayLike) -> FloatArray:
        """Annualised decimal vol at expiry ``t`` (years) and ``ln(K/F)``, vectorized."""
        t_arr, k_arr = np.broadcast_arrays(
            np.asarray(t, dtype=np.float64), np.asarray(log_moneyness, dtype=np.float64)
        )
        t_flat = t_arr.ravel()
        k_flat = k_arr.ravel()
        exp = self.expiries
        m = len(exp)
        smiles = np.stack([self.smile(i, k_flat) for i in range(m)])  # (m, n)
        hi = np.clip(np.searchsorted(exp, t_flat, side="left"), 0, m - 1)
        lo = np.clip(hi - 1, 0, m - 1)
        cols = np.arange(t_flat.size)
        v_lo, v_hi = smiles[lo, cols], smiles[hi, cols]
        t_lo, t_hi = exp[lo], exp[hi]
        w_lo, w_hi = v_lo**2 * t_lo, v_hi**2 * t_hi
        span = np.where(t_hi > t_lo, t_hi - t_lo, 1.0)
        frac = np.clip((t_flat - t_lo) / span, 0.0, 1.0)
        w = w_lo + frac * (w_hi - w_lo)
        inside = (t_flat > exp[0]) & (t_flat < exp[-1]) & (t_hi > t_lo)
        safe_t = np.where(inside, t_flat, 1.0)
        interp = np.sqrt(np.maximum(w, 0.0) / safe_t)
        flat = np.where(t_flat <= exp[0], smiles[0, cols], smiles[-1, cols])
        exact = np.isin(t_flat, exp)
        on_grid = smiles[np.clip(np.searchsorted(exp, t_flat), 0, m - 1), cols]
        out = np.where(inside, interp, flat)
        out = np.where(exact, on_grid, out)
        return out.reshape(t_arr.shape)
