"""Profile benchmark: every methodology profile on the engine benchmark's synthetic book.

The engine benchmark's synthetic book (BTC, ETH, SOL chains; real last 2024 closes and DVOL
where the shared data folder exists; 1,000,000 accounts, or ``XMARGIN_BENCH_ACCOUNTS``) is
built once and each profile margins it, next to :func:`margin.engine.compute_margin` on the
same book (default methodology, warm: the engine's one-off position layout is excluded, as is
each profile's one-off split of the book into its inputs). Single-underlying profiles run once
per underlying and their times are summed:

- ``derive_pmrm2``: options and the linear perp of the underlying, coin and USDC balances as
  collateral (the home coin risk-cancelling); futures, spot and inverse contracts have no
  Derive counterpart and are left out.
- ``deribit_pm``, ``paradex_pm``, ``span``: every instrument of the underlying (perps, inverse
  perps, futures, options); SPAN adds the BTC-ETH inter-commodity credit.
- ``linear``: the perp and future positions (linear and inverse), margined by dYdX's
  open-interest-scaled IMF, Drift's size premium and Hyperliquid's leverage tiers, summed per
  account.

Each profile figure is the median of 3 runs, wall and CPU (``process_time``: every thread of
the process) time. The engine is timed 3 times before and 3 times after the profiles and its
reference is the median of the 6, so load that changes during the run weighs on both sides.
The target (<= 2) applies to the ratio of the medians; on a shared machine the CPU ratio is
the steadier figure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.sparse as sp

from benchmarks.bench_engine import benchmark_methodology, synthetic_book
from margin.book import Book
from margin.engine import compute_margin
from margin.instruments import InstrumentKind, InstrumentTable
from margin.profiles.deribit_pm import deribit_pm_margin
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
from margin.profiles.linear import (
    DriftMarket,
    DydxLiquidityTier,
    HyperliquidMarginTable,
    HyperliquidTier,
    drift_perp_margin,
    dydx_margin,
    hyperliquid_margin,
)
from margin.profiles.paradex_pm import paradex_margin
from margin.profiles.span import (
    InterCommoditySpread,
    IntraSpreadTier,
    SpanParameters,
    inter_commodity_credit,
    span_margin,
)
from margin.typing import FloatArray, IntArray

N_ACCOUNTS = int(os.environ.get("XMARGIN_BENCH_ACCOUNTS", "1000000"))
T = TypeVar("T")


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


def span_parameters(index: float) -> SpanParameters:
    """Illustrative SPAN set for one coin: 16 % price scan, 10 vol points, three expiry tiers.

    Calendar charges and the short option minimum are set as fractions of the index (USD per
    coin of spread, USD per short option), so the same rule fits BTC, ETH and SOL.
    """
    return SpanParameters(
        price_scan_range=0.16,
        vol_scan_range=0.10,
        short_option_minimum=0.005 * index,
        tier_bounds_years=(0.08, 0.25),
        intra_spreads=(
            IntraSpreadTier(tier_a=0, tier_b=1, charge=0.01 * index),
            IntraSpreadTier(tier_a=1, tier_b=2, charge=0.01 * index),
            IntraSpreadTier(tier_a=0, tier_b=2, charge=0.015 * index),
        ),
    )


@dataclass(frozen=True)
class UnderlyingSlice:
    """One underlying's instruments, their market columns and the book's positions in them."""

    table: InstrumentTable
    positions: sp.csr_matrix
    index: float
    mark: FloatArray
    forward: FloatArray
    vol: FloatArray
    rate: float


def underlying_slices(book: Book) -> list[UnderlyingSlice]:
    """Split the book by underlying (all instruments of each; done once, outside the timing)."""
    table, market = book.instruments, book.market
    out = []
    for u in range(len(market.underlyings)):
        cols = np.flatnonzero(table.underlying == u)
        out.append(
            UnderlyingSlice(
                table=table.take(cols),
                positions=sp.csr_matrix(book.positions[:, cols]),
                index=float(market.index[u]),
                mark=market.mark[cols],
                forward=market.forward[cols],
                vol=market.vol[cols],
                rate=float(market.rate[u]),
            )
        )
    return out


@dataclass(frozen=True)
class PerpMarkets:
    """Perp and future positions grouped by market (column-major), for the linear profile."""

    underlying: IntArray  # per market
    mark: FloatArray  # per market, USD
    start: IntArray  # per market, into the position arrays; market m is start[m]:start[m + 1]
    account: IntArray  # per position
    usd_notional: FloatArray  # per position, absolute
    coins: FloatArray  # per position, absolute size in base units
    n_accounts: int


def perp_markets(book: Book) -> PerpMarkets:
    """Perp and future positions of the book as per-market slices (done once, untimed)."""
    table, market = book.instruments, book.market
    delta_one = np.isin(
        table.kind,
        (
            InstrumentKind.LINEAR_PERP,
            InstrumentKind.INVERSE_PERP,
            InstrumentKind.LINEAR_FUTURE,
            InstrumentKind.INVERSE_FUTURE,
        ),
    )
    cols = np.flatnonzero(delta_one)
    csc = sp.csc_matrix(book.positions[:, cols])
    market_of = np.repeat(np.arange(cols.size), np.diff(csc.indptr))
    inst = cols[market_of]
    qty = np.abs(csc.data)
    mark = market.mark[inst]
    size = table.contract_size[inst]
    inverse = table.is_inverse[inst]
    usd = np.where(inverse, qty * size, qty * size * mark)
    return PerpMarkets(
        underlying=table.underlying[cols],
        mark=market.mark[cols],
        start=np.asarray(csc.indptr, dtype=np.intp),
        account=np.asarray(csc.indices, dtype=np.intp),
        usd_notional=usd,
        coins=usd / mark,
        n_accounts=book.n_accounts,
    )


DYDX_TIERS = (  # large-cap tier for BTC and ETH, mid-cap for SOL
    DydxLiquidityTier(
        initial_margin_fraction=0.02,
        maintenance_fraction=0.6,
        open_interest_lower_cap=20e6,
        open_interest_upper_cap=50e6,
    ),
    DydxLiquidityTier(
        initial_margin_fraction=0.02,
        maintenance_fraction=0.6,
        open_interest_lower_cap=20e6,
        open_interest_upper_cap=50e6,
    ),
    DydxLiquidityTier(
        initial_margin_fraction=0.05,
        maintenance_fraction=0.6,
        open_interest_lower_cap=5e6,
        open_interest_upper_cap=10e6,
    ),
)
DRIFT_MARKETS = (
    DriftMarket(margin_ratio_initial=0.10, margin_ratio_maintenance=0.05, imf_factor=0.00025),
    DriftMarket(margin_ratio_initial=0.10, margin_ratio_maintenance=0.05, imf_factor=0.0002),
    DriftMarket(margin_ratio_initial=0.10, margin_ratio_maintenance=0.05, imf_factor=0.0001),
)
HYPERLIQUID_TABLES = tuple(
    HyperliquidMarginTable(
        tiers=(
            HyperliquidTier(lower_bound=0.0, max_leverage=first),
            HyperliquidTier(lower_bound=bound, max_leverage=second),
        )
    )
    for first, bound, second in ((40.0, 150e6, 20.0), (25.0, 100e6, 15.0), (20.0, 70e6, 10.0))
)
USER_LEVERAGE = 20.0


def linear_book_margin(book: PerpMarkets) -> dict[str, tuple[FloatArray, FloatArray]]:
    """IM and MM per account (USD) of the perp/future positions under each linear venue.

    Every perp and future is its own market with its underlying's parameters. The synthetic
    book's own open interest is far beyond published dYdX caps (every market would be fully
    collateralised), so each market's open interest is set inside its tier's ramp: a tenth of
    the way up for the largest market, less in proportion to gross notional for the others.
    Loops run over markets, not accounts.
    """
    n_pos = book.account.size
    out = {v: (np.empty(n_pos), np.empty(n_pos)) for v in ("dydx", "drift", "hyperliquid")}
    cumulative = np.concatenate([[0.0], np.cumsum(book.usd_notional)])
    gross = cumulative[book.start[1:]] - cumulative[book.start[:-1]]
    share = gross / max(gross.max(initial=0.0), 1e-300)  # 1 for the largest market
    for m, u in enumerate(book.underlying.tolist()):
        part = slice(book.start[m], book.start[m + 1])
        usd, coins = book.usd_notional[part], book.coins[part]
        tier = DYDX_TIERS[u]
        low, high = tier.open_interest_lower_cap, tier.open_interest_upper_cap
        open_interest = low + share[m] * 0.1 * (high - low)  # largest: 1/10 up
        figures = {
            "dydx": dydx_margin(tier, usd, open_interest_notional=open_interest),
            "drift": drift_perp_margin(DRIFT_MARKETS[u], coins, book.mark[m]),
            "hyperliquid": hyperliquid_margin(HYPERLIQUID_TABLES[u], usd, USER_LEVERAGE),
        }
        for venue, (im, mm) in figures.items():
            out[venue][0][part], out[venue][1][part] = im, mm
    n = book.n_accounts
    return {
        venue: (
            np.asarray(np.bincount(book.account, weights=im, minlength=n), dtype=np.float64),
            np.asarray(np.bincount(book.account, weights=mm, minlength=n), dtype=np.float64),
        )
        for venue, (im, mm) in out.items()
    }


def span_book_margin(slices: list[UnderlyingSlice]) -> list[FloatArray]:
    """SPAN margin per account and underlying, with the BTC-ETH inter-commodity credit."""
    results = [
        span_margin(
            s.table,
            s.positions,
            index=s.index,
            mark=s.mark,
            forward=s.forward,
            vol=s.vol,
            rate=s.rate,
            params=span_parameters(s.index),
        )
        for s in slices
    ]
    ratio = slices[0].index / slices[1].index  # ETH coins per BTC coin of equal value
    credit_btc, credit_eth = inter_commodity_credit(
        results[0],
        results[1],
        InterCommoditySpread(delta_ratio_a=1.0, delta_ratio_b=ratio, credit_rate=0.5),
    )
    margins = [r.margin for r in results]
    margins[0] = margins[0] - credit_btc
    margins[1] = margins[1] - credit_eth
    return margins


@dataclass(frozen=True)
class Timing:
    """Median wall and CPU seconds of repeated calls (CPU: all threads of the process)."""

    wall: float
    cpu: float
    walls: tuple[float, ...]
    cpus: tuple[float, ...]

    def merged(self, other: Timing) -> Timing:
        """The medians over both sets of calls."""
        walls, cpus = self.walls + other.walls, self.cpus + other.cpus
        return Timing(float(np.median(walls)), float(np.median(cpus)), walls, cpus)


def timed(work: Callable[[], object], repeats: int = 3) -> Timing:
    """Call ``work`` ``repeats`` times; medians of wall (``perf_counter``) and CPU
    (``process_time``) seconds."""
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return Timing(float(np.median(walls)), float(np.median(cpus)), tuple(walls), tuple(cpus))


def timed_once(work: Callable[[], T]) -> tuple[T, float]:
    """The result of one call of ``work`` and its wall seconds."""
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def run() -> None:
    """Print every profile's wall and CPU time and their ratios to the engine's on one book."""
    book, build_s = timed_once(lambda: synthetic_book(N_ACCOUNTS))
    methodology = benchmark_methodology()

    def engine_work() -> None:
        compute_margin(book, methodology)

    _, engine_cold_s = timed_once(engine_work)  # the first call also lays the positions out
    engine = timed(engine_work)
    (slices, derive, perps), split_s = timed_once(
        lambda: (
            underlying_slices(book),
            [derive_inputs(book, u) for u in range(len(book.market.underlyings))],
            perp_markets(book),
        )
    )
    load = os.getloadavg()[0]
    print(
        f"book: {book.n_accounts:,} accounts, {book.positions.nnz:,} positions, "
        f"built in {build_s:.1f} s; load average {load:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"engine compute_margin (full book, default methodology), median of 3: "
        f"{engine.wall:.2f} s wall, {engine.cpu:.2f} s CPU; first call incl. position layout "
        f"{engine_cold_s:.2f} s; profile inputs split from the book once in {split_s:.2f} s "
        f"(untimed below)"
    )

    def each_underlying(profile: Callable[[UnderlyingSlice], object]) -> Callable[[], None]:
        def work() -> None:
            for s in slices:
                profile(s)

        return work

    n_derive = sum(int(a.options.nnz + np.count_nonzero(a.perp_position)) for _, a, _ in derive)
    profiles: list[tuple[str, str, Callable[[], object]]] = [
        (
            "derive_pmrm2",
            f"31 scenarios + 2 basis per underlying, {n_derive:,} option/perp positions",
            lambda: [derive_pmrm2_book_margin(*inputs) for inputs in derive],
        ),
        (
            "deribit_pm",
            "27 + 8 extended scenarios per underlying, all positions",
            each_underlying(
                lambda s: deribit_pm_margin(
                    s.table,
                    s.positions,
                    index=s.index,
                    mark=s.mark,
                    forward=s.forward,
                    vol=s.vol,
                    rate=s.rate,
                )
            ),
        ),
        (
            "paradex_pm",
            "24 weighted scenarios per underlying, all positions",
            each_underlying(
                lambda s: paradex_margin(
                    s.table,
                    s.positions,
                    spot=s.index,
                    mark=s.mark,
                    forward=s.forward,
                    vol=s.vol,
                    rate=s.rate,
                )
            ),
        ),
        (
            "span",
            "16 scenarios, 3 expiry tiers per underlying, BTC-ETH credit, all positions",
            lambda: span_book_margin(slices),
        ),
        (
            "linear",
            f"dYdX + Drift + Hyperliquid on {perps.account.size:,} perp/future positions",
            lambda: linear_book_margin(perps),
        ),
    ]
    results = [(name, what, timed(work)) for name, what, work in profiles]
    # The engine again after the profiles: its reference is the median of all six calls.
    engine = engine.merged(timed(engine_work))
    print(
        f"engine reference over 6 calls (3 before, 3 after the profiles): {engine.wall:.2f} s "
        f"wall, {engine.cpu:.2f} s CPU"
    )
    for name, what, t in results:
        print(
            f"{name:<13} {t.wall:6.2f} s wall ({t.cpu:5.2f} s CPU)  ratio "
            f"{t.wall / engine.wall:5.2f} wall, {t.cpu / engine.cpu:5.2f} CPU (target <= 2)  "
            f"[{what}]",
            flush=True,
        )


if __name__ == "__main__":
    run()
