"""Vectorized Black-76 prices, Greeks and implied volatility for options on forwards.

Units used throughout this module
---------------------------------
- ``forward``, ``strike`` and prices are in the quote currency (USD) per unit of underlying.
- ``t`` is the time to expiry in **years** (ACT/365); ``t <= 0`` means at or past expiry.
- ``vol`` is the **annualised decimal** Black volatility (0.60 = 60 %).
- ``rate`` is the continuously compounded **annual decimal** discount rate.
- ``is_call`` is a boolean (array); ``False`` means put.

All functions broadcast their arguments with numpy rules and return arrays (0-d for scalar
inputs). Degenerate cases (``t <= 0`` or ``vol * sqrt(t)`` below :data:`MIN_TOTAL_VOL`) are
handled by the intrinsic-value limit so no NaN or division warnings are produced.

Formula (Black 1976)::

    d1 = (ln(F/K) + v**2 / 2) / v,   d2 = d1 - v,   v = vol * sqrt(t)
    call = D (F N(d1) - K N(d2)),   put = D (K N(-d2) - F N(-d1)),   D = exp(-r t)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

__all__ = [
    "MIN_TOTAL_VOL",
    "Black76Greeks",
    "black76_greeks",
    "black76_price",
    "implied_vol",
]

FloatArray = NDArray[np.float64]

#: Total volatility ``vol * sqrt(t)`` below which an option is valued at its (discounted)
#: intrinsic value; the Black formula and this limit agree to well under 1e-12 relative there.
MIN_TOTAL_VOL = 1e-12

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


class Black76Greeks(NamedTuple):
    """Black-76 sensitivities of one option unit (arrays broadcast like the inputs).

    Attributes
    ----------
    delta : dPrice/dForward (discounted, i.e. ``D N(d1)`` for a call), dimensionless.
    gamma : d2Price/dForward2, per USD of forward.
    vega : dPrice/dVol for a change of **1.00** in decimal annualised vol (divide by 100 for
        the per-vol-point figure most exchanges quote).
    theta : dPrice/dt of calendar time passing, **per year** (``-dPrice/dT``; divide by 365
        for per day). Negative for a long option in the usual case.
    """

    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray


def _prepare(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    is_call: ArrayLike,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, NDArray[np.bool_]]:
    f, k, tt, v, r, c = np.broadcast_arrays(
        np.asarray(forward, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(t, dtype=np.float64),
        np.asarray(vol, dtype=np.float64),
        np.asarray(rate, dtype=np.float64),
        np.asarray(is_call, dtype=bool),
    )
    return f, k, tt, v, r, c


def _d1_d2(
    f: FloatArray, k: FloatArray, total_vol: FloatArray, live: NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray]:
    """d1, d2 where ``live`` (positive total vol, positive F and K); zeros elsewhere."""
    safe_tv = np.where(live, total_vol, 1.0)
    safe_f = np.where(live, f, 1.0)
    safe_k = np.where(live, k, 1.0)
    d1 = np.where(live, (np.log(safe_f / safe_k) + 0.5 * safe_tv * safe_tv) / safe_tv, 0.0)
    return d1, d1 - np.where(live, safe_tv, 0.0)


def _live_mask(
    f: FloatArray, k: FloatArray, tt: FloatArray, v: FloatArray
) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
    t_pos = np.maximum(tt, 0.0)
    total_vol = np.maximum(v, 0.0) * np.sqrt(t_pos)
    live = (total_vol > MIN_TOTAL_VOL) & (f > 0.0) & (k > 0.0)
    return t_pos, total_vol, live


def black76_price(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    is_call: ArrayLike,
) -> FloatArray:
    """Black-76 price of a European option on a forward, vectorized.

    Parameters
    ----------
    forward, strike : array_like
        Forward price and strike, quote currency per unit of underlying.
    t : array_like
        Time to expiry in years; ``t <= 0`` gives the intrinsic value.
    vol : array_like
        Annualised decimal Black volatility; ``0`` gives the discounted intrinsic value.
    rate : array_like
        Continuously compounded annual decimal discount rate.
    is_call : array_like of bool
        ``True`` for calls, ``False`` for puts.

    Returns
    -------
    ndarray
        Option value in quote currency per unit of underlying (discounted with ``exp(-r t)``;
        at or past expiry the discount factor is 1).
    """
    f, k, tt, v, r, c = _prepare(forward, strike, t, vol, rate, is_call)
    t_pos, total_vol, live = _live_mask(f, k, tt, v)
    disc = np.exp(-r * t_pos)
    d1, d2 = _d1_d2(f, k, total_vol, live)
    sign = np.where(c, 1.0, -1.0)
    black = disc * sign * (f * ndtr(sign * d1) - k * ndtr(sign * d2))
    intrinsic = disc * np.maximum(sign * (f - k), 0.0)
    return np.asarray(np.where(live, np.maximum(black, 0.0), intrinsic), dtype=np.float64)


def black76_greeks(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    is_call: ArrayLike,
) -> Black76Greeks:
    """Black-76 delta, gamma, vega and theta, vectorized (units in :class:`Black76Greeks`).

    Parameters are those of :func:`black76_price`. In the degenerate limit (expiry or zero
    vol) delta is the discounted step ``D * 1{F > K}`` for calls (``-D * 1{F < K}`` for puts,
    ``D/2`` at the money), gamma and vega are 0 and theta is ``r * price`` (pure discounting).

    Theta is ``-dV/dT`` with the forward held fixed::

        theta = -D F n(d1) vol / (2 sqrt(t)) + r V
    """
    f, k, tt, v, r, c = _prepare(forward, strike, t, vol, rate, is_call)
    t_pos, total_vol, live = _live_mask(f, k, tt, v)
    disc = np.exp(-r * t_pos)
    d1, _ = _d1_d2(f, k, total_vol, live)
    sign = np.where(c, 1.0, -1.0)
    price = black76_price(f, k, tt, v, r, c)
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    safe_tv = np.where(live, total_vol, 1.0)
    safe_t = np.where(live, t_pos, 1.0)

    delta_live = disc * sign * ndtr(sign * d1)
    step = np.where(sign * (f - k) > 0.0, 1.0, np.where(f == k, 0.5, 0.0))
    delta_dead = disc * sign * step
    delta = np.where(live, delta_live, delta_dead)
    gamma = np.where(live, disc * pdf / (np.where(live, f, 1.0) * safe_tv), 0.0)
    vega = np.where(live, disc * f * pdf * np.sqrt(safe_t), 0.0)
    decay = np.where(live, -disc * f * pdf * v / (2.0 * np.sqrt(safe_t)), 0.0)
    theta = decay + r * price
    return Black76Greeks(
        delta=np.asarray(delta, dtype=np.float64),
        gamma=np.asarray(gamma, dtype=np.float64),
        vega=np.asarray(vega, dtype=np.float64),
        theta=np.asarray(theta, dtype=np.float64),
    )


def implied_vol(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    rate: ArrayLike,
    is_call: ArrayLike,
    *,
    vol_low: float = 1e-6,
    vol_high: float = 20.0,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> FloatArray:
    """Black-76 implied volatility by a safeguarded Newton-bisection, vectorized.

    Parameters
    ----------
    price : array_like
        Option price in quote currency per unit of underlying (discounted, as returned by
        :func:`black76_price`).
    forward, strike, t, rate, is_call : array_like
        As in :func:`black76_price` (``t`` in years).
    vol_low, vol_high : float
        Search bracket in annualised decimal volatility.
    tol : float
        Price tolerance relative to the discounted forward; iteration also requires the vol
        step to fall below ``1e-12`` relative (or the bracket to collapse).
    max_iter : int
        Iteration cap; each iteration is one vectorized Newton-or-bisection step.

    Returns
    -------
    ndarray
        Annualised decimal implied vol; ``NaN`` where the price lies outside the no-arbitrage
        bounds ``(D max(±(F-K), 0), D F)`` for calls / ``D K`` for puts, beyond the bracket,
        where ``t <= 0``, or where any input is not finite.
    """
    p, f, k, tt, r, c = (
        np.atleast_1d(a)
        for a in np.broadcast_arrays(
            np.asarray(price, dtype=np.float64),
            np.asarray(forward, dtype=np.float64),
            np.asarray(strike, dtype=np.float64),
            np.asarray(t, dtype=np.float64),
            np.asarray(rate, dtype=np.float64),
            np.asarray(is_call, dtype=bool),
        )
    )
    shape = np.broadcast_shapes(*(np.shape(a) for a in (price, forward, strike, t, rate, is_call)))
    p, f, k, tt, r, c = (a.ravel() for a in (p, f, k, tt, r, c))
    finite = np.isfinite(p) & np.isfinite(f) & np.isfinite(k) & np.isfinite(tt) & np.isfinite(r)
    valid = finite & (tt > 0.0) & (f > 0.0) & (k > 0.0)
    f, k, tt, r, p = (np.where(valid, a, 1.0) for a in (f, k, tt, r, p))
    disc = np.exp(-r * tt)
    sign = np.where(c, 1.0, -1.0)
    lower = disc * np.maximum(sign * (f - k), 0.0)
    upper = disc * np.where(c, f, k)
    valid &= (p > lower) & (p < upper)

    lo = np.full(p.shape, vol_low)
    hi = np.full(p.shape, vol_high)
    valid &= black76_price(f, k, tt, lo, r, c) <= p
    valid &= black76_price(f, k, tt, hi, r, c) >= p
    # Start from the Brenner-Subrahmanyam ATM approximation, clipped into the bracket.
    guess = np.sqrt(2.0 * np.pi / tt) * p / (disc * f)
    sigma = np.clip(guess, vol_low * 2.0, vol_high / 2.0)
    scale = disc * f
    active = valid.copy()
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        fi, ki, ti, ri, ci, pi = f[idx], k[idx], tt[idx], r[idx], c[idx], p[idx]
        si = sigma[idx]
        diff = black76_price(fi, ki, ti, si, ri, ci) - pi
        # Maintain the bracket: the price is increasing in vol.
        lo_i = np.where(diff < 0.0, si, lo[idx])
        hi_i = np.where(diff > 0.0, si, hi[idx])
        vega = black76_greeks(fi, ki, ti, si, ri, ci).vega
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = si - diff / vega
        inside = np.isfinite(newton) & (newton > lo_i) & (newton < hi_i)
        nxt = np.where(inside, newton, 0.5 * (lo_i + hi_i))
        converged = (np.abs(diff) <= tol * scale[idx]) & (np.abs(nxt - si) <= 1e-12 * si)
        converged |= diff == 0.0
        converged |= (hi_i - lo_i) <= 1e-15 * hi_i
        lo[idx], hi[idx] = lo_i, hi_i
        sigma[idx] = np.where(converged, si, nxt)
        active[idx] = ~converged
    return np.where(valid, sigma, np.nan).reshape(shape)
