"""Derive PMRM_2 book path against a straightforward per-account evaluation.

The book path never forms an accounts × scenarios array: it sums discounted values per
account with sparse products, values only the pairs holding both longs and shorts one by
one, and finds the worst scenario of accounts without options in closed form. The reference
here walks every account, expiry and scenario in plain Python, exactly as the methodology
reads (``docs/methodologies.md``), from the same one-unit option prices. Markets are
published case markets, widened with more strikes (calls and puts at each) so that books
hold spreads, pooled strikes and several expiries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from margin.profiles.derive_cases import load_derive_case
from margin.profiles.derive_pmrm2 import (
    DeriveAccounts,
    DeriveMarket,
    DerivePMRM2Parameters,
    MarketValuation,
    OptionSeries,
    _worst,
    _worst_of_exposure,
    account_figures,
    depeg_im_factor,
    derive_pmrm2_book_margin,
    oracle_contingency,
    value_market,
)

#: Published markets: several expiries and collaterals, options out of expiry order,
#: low expiry / collateral / perp confidences.
CASES = (
    "test_16_risk_cancelling_general_covered_call",
    "test_36_tails_general_tail_test_2",
    "test_44_skews_abs_as_worst_case_complex",
)


def _widened(market: DeriveMarket, shuffled: bool = True) -> DeriveMarket:
    """The market with a call and a put at 0.8, 0.9, 1.0, 1.1 and 1.2 × each listed strike.

    Options keep their expiry and mark vol; the new list is shuffled, or sorted by expiry
    and strike (the layout the book path handles without sorting positions).
    """
    opt = market.options
    moneyness = np.array([0.8, 0.9, 1.0, 1.1, 1.2])
    base = np.repeat(np.arange(opt.strike.size), moneyness.size * 2)
    strike = np.repeat(np.outer(opt.strike, moneyness).ravel(), 2)
    is_call = np.tile([True, False], base.size // 2)
    expiry = opt.expiry[base]
    if shuffled:
        order = np.random.default_rng(0).permutation(base.size)
    else:
        order = np.lexsort((~is_call, strike, expiry))
    return replace(
        market,
        options=OptionSeries(
            expiry=expiry[order],
            strike=strike[order],
            is_call=is_call[order],
            vol=opt.vol[base][order],
        ),
    )


def _random_book(market: DeriveMarket, n: int, seed: int) -> tuple[DeriveAccounts, np.ndarray]:
    """Random accounts: only longs, only shorts, spreads, no options; with perps and
    collateral; some explicit zeros in the sparse positions. Returns the dense positions too.
    """
    rng = np.random.default_rng(seed)
    n_opt, n_coll = market.options.strike.size, len(market.collateral_names)
    held = rng.random((n, n_opt)) < 0.3
    amount = rng.integers(1, 6, size=(n, n_opt)) * held * rng.choice([-1.0, 1.0], (n, n_opt))
    style = rng.integers(0, 4, n)  # 0 longs only, 1 shorts only, 2 mixed, 3 no options
    amount[style == 0] = np.abs(amount[style == 0])
    amount[style == 1] = -np.abs(amount[style == 1])
    amount[style == 3] = 0.0
    amount *= rng.choice([0.5, 1.0, 1.25], size=(n, 1))
    positions = sp.csr_matrix(amount)
    zeros = rng.random(positions.nnz) < 0.05
    positions.data[zeros] = 0.0  # explicit zeros stay stored
    perp = rng.integers(-3, 4, n) * (rng.random(n) < 0.5) * rng.choice([0.1, 1.0], n)
    accounts = DeriveAccounts(
        cash=rng.normal(0.0, 20_000.0, n),
        perp_position=perp.astype(np.float64),
        perp_unrealised=rng.normal(0.0, 100.0, n),
        options=positions,
        collateral=rng.random((n, n_coll)) * 3.0 * (rng.random((n, n_coll)) < 0.6),
    )
    return accounts, positions.toarray()


@dataclass(frozen=True)
class _Reference:
    im: float
    mm: float
    mtm: float
    worst: float
    worst_scenario: int
    margin_to_runner_up: float  # gap between the two lowest candidates of the worst search


def _reference_account(
    market: DeriveMarket,
    params: DerivePMRM2Parameters,
    val: MarketValuation,
    accounts: DeriveAccounts,
    amounts: np.ndarray,
    i: int,
) -> _Reference:
    """One account's margin, expiry by expiry and scenario by scenario."""
    opt, cp, spot = market.options, params.contingency, market.spot
    q = amounts[i]
    scenarios = params.scenarios
    pnl = [0.0] * len(scenarios)
    basis, option_mtm = 0.0, 0.0
    for e in range(market.expiries.seconds_to_expiry.size):
        in_expiry = np.flatnonzero((opt.expiry == e) & (q != 0.0))
        if in_expiry.size == 0:
            continue
        value = val.price_row_opt[:, in_expiry] @ q[in_expiry]  # every grid row
        mark = float(value[0])
        option_mtm += mark
        growth = params.basis.add_factor + params.basis.mult_factor * val.tau_exp[e]
        basis += min(0.0, value[1] - mark, value[2] - mark) * growth
        for k, scenario in enumerate(scenarios):
            v = float(value[3 + k])
            discount = val.static_discount_pos[e] if v >= 0.0 else val.static_discount_neg[e]
            term = discount * v - mark
            if scenario.vol_shock.is_skew:
                term = -abs(term)
            pnl[k] += term * scenario.dampening

    coll_value = accounts.collateral[i] * market.collateral_price / market.stable_price
    coll_params = [params.collaterals[name] for name in market.collateral_names]
    exposure = accounts.perp_position[i] * market.perp_price + sum(
        v for v, c in zip(coll_value, coll_params, strict=True) if c.risk_cancelling
    )
    for k, scenario in enumerate(scenarios):
        pnl[k] += exposure * (scenario.spot_shock - 1.0) * scenario.dampening

    candidates = sorted([*((p, k) for k, p in enumerate(pnl)), (basis, -1)])
    worst, worst_scenario = basis, -1
    for k, p in enumerate(pnl):
        if p < worst:
            worst, worst_scenario = p, k

    naked = 0.0
    for e, strike in {(int(e), float(k)) for e, k in zip(opt.expiry, opt.strike, strict=True)}:
        at_strike = (opt.expiry == e) & (opt.strike == strike)
        naked += max(0.0, -float(q[at_strike].sum()))
    perp_units = abs(accounts.perp_position[i])
    with_perp = min(market.spot_confidence, market.perp_confidence)
    account_conf = with_perp if accounts.perp_position[i] != 0.0 else market.spot_confidence
    oracle = float(
        oracle_contingency(
            np.array([with_perp]),
            np.array([perp_units * spot]),
            cp,
        )[0]
    )
    for e in range(market.expiries.seconds_to_expiry.size):
        gross = float(np.abs(q[opt.expiry == e]).sum())
        conf = min(account_conf, market.expiries.confidence[e])
        oracle += float(oracle_contingency(np.array([conf]), np.array([gross * spot]), cp)[0])
    for value, conf in zip(coll_value, market.collateral_confidence, strict=True):
        own = min(conf, market.spot_confidence)
        oracle += float(oracle_contingency(np.array([own]), np.array([value]), cp)[0])

    mm_add = (
        perp_units * spot * cp.mm_perp_percent
        + naked * spot * cp.mm_option_percent
        + sum(v * c.mm_haircut for v, c in zip(coll_value, coll_params, strict=True))
    )
    im_add = (
        perp_units * spot * cp.im_perp_percent
        + naked * spot * cp.im_option_percent
        + sum(v * c.im_haircut for v, c in zip(coll_value, coll_params, strict=True))
        + oracle
    )
    mtm = accounts.perp_unrealised[i] + option_mtm + float(coll_value.sum())
    equity = mtm + accounts.cash[i]
    im_factor = depeg_im_factor(market.stable_price, params.margin, cp)
    return _Reference(
        im=equity + im_factor * worst - mm_add - im_add,
        mm=equity + params.margin.mm_factor * worst - mm_add,
        mtm=mtm,
        worst=worst,
        worst_scenario=worst_scenario,
        margin_to_runner_up=candidates[1][0] - candidates[0][0],
    )


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize(("seed", "layout"), [(1, "sorted"), (2, "shuffled"), (3, "csc")])
def test_book_equals_account_by_account_reference(
    case_dir: Path, name: str, seed: int, layout: str
) -> None:
    """Options sorted by (expiry, strike) or not, positions given as CSR or CSC."""
    case = load_derive_case(case_dir / f"{name}.json")
    market, params = _widened(case.portfolio.market, layout != "sorted"), case.parameters
    accounts, amounts = _random_book(market, 120, seed)
    given_accounts = (
        replace(accounts, options=accounts.options.tocsc()) if layout == "csc" else accounts
    )
    book = derive_pmrm2_book_margin(market, given_accounts, params, chunk_size=37)
    val = value_market(market, params)
    ref = [_reference_account(market, params, val, accounts, amounts, i) for i in range(120)]

    np.testing.assert_allclose(book.im, [r.im for r in ref], rtol=1e-11, atol=1e-7)
    np.testing.assert_allclose(book.mm, [r.mm for r in ref], rtol=1e-11, atol=1e-7)
    np.testing.assert_allclose(book.mtm, [r.mtm for r in ref], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(book.worst_loss, [r.worst for r in ref], rtol=1e-11, atol=1e-8)
    clear = np.array([r.margin_to_runner_up > 1e-6 for r in ref])
    expected_index = np.array([r.worst_scenario for r in ref])
    np.testing.assert_array_equal(book.worst_scenario[clear], expected_index[clear])
    # The book exercises what the fast path treats specially.
    holds = np.diff(accounts.options.indptr) > 0
    assert (~holds).sum() > 10 and (accounts.perp_position[~holds] != 0.0).any()
    assert (book.worst_scenario >= 0).any() and (book.worst_scenario == -1).any()


def test_threads_and_chunks_do_not_change_results(case_dir: Path) -> None:
    """Chunks computed on two threads write the same figures as one pass on one thread."""
    case = load_derive_case(case_dir / f"{CASES[0]}.json")
    market, params = _widened(case.portfolio.market), case.parameters
    accounts, _ = _random_book(market, 200, 7)
    one = derive_pmrm2_book_margin(market, accounts, params, chunk_size=1000, n_threads=1)
    many = derive_pmrm2_book_margin(market, accounts, params, chunk_size=9, n_threads=2)
    for name in ("im", "mm", "mtm", "worst_loss", "worst_scenario"):
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name), err_msg=name)


@pytest.mark.parametrize("name", CASES)
def test_book_breaks_scenario_ties_like_a_dense_search(case_dir: Path, name: str) -> None:
    """Repeated scenarios tie exactly; the book picks the first, as ``argmin`` would."""
    case = load_derive_case(case_dir / f"{name}.json")
    market = _widened(case.portfolio.market)
    twice = case.parameters.scenarios * 2
    params = case.parameters.model_copy(update={"scenarios": tuple(reversed(twice))})
    accounts, _ = _random_book(market, 80, seed=9)
    book = derive_pmrm2_book_margin(market, accounts, params, chunk_size=25)
    fig = account_figures(market, accounts, params, value_market(market, params))
    worst, index = _worst(fig.basis_acct, fig.pnl_acct_scen)
    np.testing.assert_array_equal(book.worst_scenario, index)
    np.testing.assert_allclose(book.worst_loss, worst, rtol=1e-12, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    exposure=st.lists(
        st.one_of(st.just(0.0), st.floats(1e-6, 1e7), st.floats(-1e7, -1e-6)),
        min_size=1,
        max_size=40,
    ),
    shocks=st.lists(
        st.tuples(
            st.sampled_from([0.5, 0.82, 1.0, 1.18, 1.5, 3.0]), st.sampled_from([0.0, 0.5, 1.0])
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_worst_of_exposure_equals_dense_argmin(
    exposure: list[float], shocks: list[tuple[float, float]]
) -> None:
    """Closed-form worst scenario of accounts without options = search over every scenario."""
    e = np.array(exposure)
    linear_pnl = np.array([(s - 1.0) * d for s, d in shocks])
    worst, index = _worst_of_exposure(e, linear_pnl)
    dense_worst, dense_index = _worst(np.zeros(e.size), np.multiply.outer(e, linear_pnl))
    np.testing.assert_array_equal(index, dense_index)
    np.testing.assert_array_equal(worst, dense_worst)


def test_book_of_accounts_without_options(case_dir: Path) -> None:
    """A market without options: only perps and collateral, every account in closed form."""
    case = load_derive_case(case_dir / "test_32_perps_perp_hedging.json")
    market, params = case.portfolio.market, case.parameters
    assert market.options.strike.size == 0
    accounts, amounts = _random_book(market, 30, seed=4)
    book = derive_pmrm2_book_margin(market, accounts, params, chunk_size=8)
    val = value_market(market, params)
    ref = [_reference_account(market, params, val, accounts, amounts, i) for i in range(30)]
    np.testing.assert_allclose(book.im, [r.im for r in ref], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(book.mm, [r.mm for r in ref], rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(book.worst_scenario, [r.worst_scenario for r in ref])


def test_reference_reproduces_a_published_case(case_dir: Path) -> None:
    """The reference itself is right: it reproduces a published multi-expiry case."""
    case = load_derive_case(case_dir / "test_44_skews_abs_as_worst_case_complex.json")
    portfolio, params = case.portfolio, case.parameters
    accounts = portfolio.as_accounts()
    ref = _reference_account(
        portfolio.market,
        params,
        value_market(portfolio.market, params),
        accounts,
        portfolio.option_amount[None, :],
        0,
    )
    assert ref.im == pytest.approx(case.expected.im, rel=1e-9)
    assert ref.mm == pytest.approx(case.expected.mm, rel=1e-9)


def test_empty_book_gives_empty_results(case_dir: Path) -> None:
    case = load_derive_case(case_dir / "test_44_skews_abs_as_worst_case_complex.json")
    market = case.portfolio.market
    accounts, _ = _random_book(market, 0, seed=1)
    book = derive_pmrm2_book_margin(market, accounts, case.parameters)
    assert book.im.shape == book.mm.shape == book.worst_scenario.shape == (0,)
