"""Profile benchmark: Derive PMRM_2 on the engine benchmark's 1,000,000-account book.

The engine benchmark's synthetic book (BTC, ETH, SOL chains; real last 2024 closes and DVOL
where the shared data folder exists) is mapped onto Derive's model, one underlying at a
time: options and the linear perp of that underlying, coin and USDC balances as collateral
(the home coin risk-cancelling). Futures, spot and inverse contracts have no Derive
counterpart and are left out. Prints the wall time of
:func:`margin.profiles.derive_pmrm2.derive_pmrm2_book_margin` over the three underlyings next
to :func:`margin.engine.compute_margin` on the full book, and their ratio (target: <= 2).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from benchmarks.bench_engine import benchmark_methodology, synthetic_book
from margin.book import Book
from margin.engine import compute_margin
from margin.instruments import InstrumentKind
from margin.profiles.derive_pmrm2 import (
    SECONDS_PER_YEAR,
    BasisContingencyParameters,
    CollateralParameters,
    ContingencyParameters,
    DeriveAccounts,
    DeriveMarket,
    DerivePMRM2Parameters,
    DeriveScenario,
    ExpiryFeeds,
    MarginParameters,
    OptionSeries,
    SkewShockParameters,
    VolShock,
    VolShockParameters,
    derive_pmrm2_book_margin,
)

N_ACCOUNTS = 1_000_000


def derive_test_vector_parameters(
    collateral_names: tuple[str, ...], home: str
) -> DerivePMRM2Parameters:
    """The parameter set shared by Derive's published PMRM_2 test vectors."""
    regular = [(1.18, VolShock.UP)]
    for s in (1.135, 1.09, 1.045, 1.0, 0.955, 0.91, 0.865):
        regular += [(s, VolShock.DOWN), (s, VolShock.NONE), (s, VolShock.UP)]
    regular.append((0.82, VolShock.UP))
    tails = [(0.34, 0.0545454545), (0.67, 0.1090909091), (1.5, 0.072), (2.0, 0.036),
             (3.0, 0.018), (4.0, 0.012)]  # fmt: skip
    scenarios = (
        [DeriveScenario(spot_shock=s, vol_shock=v, dampening=1.0) for s, v in regular]
        + [DeriveScenario(spot_shock=s, vol_shock=VolShock.UP, dampening=d) for s, d in tails]
        + [
            DeriveScenario(spot_shock=1.0, vol_shock=k, dampening=1.0)
            for k in (VolShock.LINEAR, VolShock.ABS)
        ]
    )
    return DerivePMRM2Parameters(
        scenarios=tuple(scenarios),
        vol_shock=VolShockParameters(
            vol_range_up=0.5,
            vol_range_down=0.275,
            short_term_power=0.3,
            long_term_power=0.13,
            dte_floor_days=1.0,
            min_vol_up_shock=0.45,
        ),
        margin=MarginParameters(
            im_factor=1.0,
            mm_factor=0.8,
            long_base_static_discount=0.95,
            short_base_static_discount=1.04,
            long_rate_mult_scale=1.0,
            long_rate_add_scale=0.08,
            short_rate_mult_scale=0.5,
            short_rate_add_scale=0.08,
        ),
        basis=BasisContingencyParameters(
            spot_up=1.045, spot_down=0.955, add_factor=0.5, mult_factor=2.0
        ),
        contingency=ContingencyParameters(
            peg_loss_threshold=0.98,
            peg_loss_factor=2.0,
            confidence_threshold=0.55,
            confidence_margin=1.0,
            mm_perp_percent=0.015,
            im_perp_percent=0.005,
            mm_option_percent=0.003,
            im_option_percent=0.002,
        ),
        skew=SkewShockParameters(
            linear_base_cap=0.15,
            linear_c_base=-0.05,
            abs_base_cap=0.15,
            abs_c_base=-0.05,
            min_k_star=0.01,
            width_scale=4.0,
            vol_param_static=0.6,
            vol_param_scale=-0.1,
        ),
        collaterals={
            name: CollateralParameters(
                mm_haircut=0.02, im_haircut=0.01, risk_cancelling=(name == home)
            )
            for name in collateral_names
        },
    )


def derive_inputs(book: Book, u: int) -> tuple[DeriveMarket, DeriveAccounts, DerivePMRM2Parameters]:
    """Derive market, accounts and parameters for underlying ``u`` of an engine book."""
    table, market = book.instruments, book.market
    opt = np.flatnonzero(table.is_option & (table.underlying == u))
    years, expiry = np.unique(table.expiry_years[opt], return_inverse=True)
    first = np.array([opt[np.flatnonzero(expiry == e)[0]] for e in range(years.size)])
    perp = np.flatnonzero((table.kind == InstrumentKind.LINEAR_PERP) & (table.underlying == u))
    coin_price = np.array([market.index[0], market.index[1], 1.0])
    names = tuple(book.assets)
    derive_market = DeriveMarket(
        spot=float(market.index[u]),
        spot_confidence=1.0,
        stable_price=1.0,
        perp_price=float(market.mark[perp[0]]),
        perp_confidence=1.0,
        expiries=ExpiryFeeds(
            seconds_to_expiry=years * SECONDS_PER_YEAR,
            forward_variable=market.forward[first],
            forward_fixed=np.zeros(years.size),
            rate=np.full(years.size, float(market.rate[u])),
            confidence=np.ones(years.size),
        ),
        options=OptionSeries(
            expiry=expiry.astype(np.intp),
            strike=table.strike[opt],
            is_call=table.is_call[opt],
            vol=market.vol[opt],
        ),
        collateral_names=names,
        collateral_price=coin_price,
        collateral_confidence=np.ones(len(names)),
    )
    positions = book.positions.tocsc()
    accounts = DeriveAccounts(
        cash=np.zeros(book.positions.shape[0]),
        perp_position=positions[:, perp[0]].toarray().ravel(),
        perp_unrealised=np.zeros(book.positions.shape[0]),
        options=sp.csr_matrix(positions[:, opt]),
        collateral=book.collateral.toarray(),
    )
    return derive_market, accounts, derive_test_vector_parameters(names, book.market.underlyings[u])


def run() -> None:
    """Print Derive-profile and engine wall times on the same 1,000,000-account book."""
    book = synthetic_book(N_ACCOUNTS)
    inputs = [derive_inputs(book, u) for u in range(len(book.market.underlyings))]
    n_pos = sum(int(a.options.nnz + np.count_nonzero(a.perp_position)) for _, a, _ in inputs)
    start = time.perf_counter()
    for market, accounts, params in inputs:
        derive_pmrm2_book_margin(market, accounts, params)
    derive_s = time.perf_counter() - start
    start = time.perf_counter()
    compute_margin(book, benchmark_methodology())
    engine_s = time.perf_counter() - start
    n_opt = sum(m.options.strike.size for m, _, _ in inputs)
    print(
        f"book: {N_ACCOUNTS:,} accounts; Derive sees {n_pos:,} option/perp positions "
        f"over {n_opt} options"
    )
    print(f"derive_pmrm2 (31 scenarios + 2 basis, 3 underlyings): {derive_s:6.2f} s")
    print(f"engine compute_margin (full book, default methodology): {engine_s:6.2f} s")
    print(f"ratio profile / engine: {derive_s / engine_s:5.2f} (target <= 2)")
