"""Derive PMRM_2 book path against a plain dense reference over published markets.

The book path aggregates (account, expiry) values with sparse products and splits the static
discount into a linear and a convex part; the reference here values every account × expiry
× scenario densely and applies the discount element by element, as the methodology states it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from margin.profiles.derive_cases import load_derive_case
from margin.profiles.derive_pmrm2 import (
    DeriveAccounts,
    DeriveMarket,
    account_figures,
    derive_pmrm2_book_margin,
    value_market,
)
from margin.typing import FloatArray

#: Published markets with several expiries; test_44 lists its options out of expiry order.
MULTI_EXPIRY_CASES = (
    "test_16_risk_cancelling_general_covered_call",
    "test_44_skews_abs_as_worst_case_complex",
    "test_57_forward_cont_forward_cont_2",
)


def _random_accounts(market: DeriveMarket, n: int, seed: int) -> DeriveAccounts:
    """Random holdings; about a third of the accounts hold no option at all."""
    rng = np.random.default_rng(seed)
    n_opt, n_coll = market.options.strike.size, len(market.collateral_names)
    dense = rng.integers(-4, 5, size=(n, n_opt)) * (rng.random((n, n_opt)) < 0.6)
    dense[rng.random(n) < 0.33] = 0
    return DeriveAccounts(
        cash=rng.normal(0.0, 5_000.0, n),
        perp_position=(rng.integers(-2, 3, n) * (rng.random(n) < 0.5)).astype(np.float64),
        perp_unrealised=rng.normal(0.0, 50.0, n),
        options=sp.csr_matrix(dense.astype(np.float64)),
        collateral=rng.random((n, n_coll)) * (rng.random((n, n_coll)) < 0.7),
    )


def _dense_option_pnl(
    market: DeriveMarket, accounts: DeriveAccounts, case_path: Path
) -> tuple[FloatArray, FloatArray]:
    """(option MTM per account × expiry, option P&L per account × scenario), densely."""
    params = load_derive_case(case_path).parameters
    val = value_market(market, params)
    positions = accounts.options.toarray()
    n_exp = market.expiries.seconds_to_expiry.size
    in_expiry = market.options.expiry[None, :] == np.arange(n_exp)[:, None]  # exp × opt
    # value[a, e, r]: account a's options of expiry e in grid row r
    value = np.einsum("ao,eo,ro->aer", positions, in_expiry.astype(np.float64), val.price_row_opt)
    mark, shocked = value[:, :, 0], value[:, :, 3:]
    discount = np.where(
        shocked >= 0.0,
        val.static_discount_pos[None, :, None],
        val.static_discount_neg[None, :, None],
    )
    pnl = (discount * shocked - mark[:, :, None]) * val.dampening
    pnl[:, :, val.is_skew] = -np.abs(pnl[:, :, val.is_skew])
    return mark, pnl.sum(axis=1)


@pytest.mark.parametrize("name", MULTI_EXPIRY_CASES)
def test_scenario_pnl_equals_dense_reference(case_dir: Path, name: str) -> None:
    path = case_dir / f"{name}.json"
    case = load_derive_case(path)
    market = case.portfolio.market
    accounts = _random_accounts(market, 60, seed=11)
    no_exposure = replace(
        accounts,
        perp_position=np.zeros(accounts.n_accounts),
        collateral=np.zeros_like(accounts.collateral),
    )
    fig = account_figures(
        market, no_exposure, case.parameters, value_market(market, case.parameters)
    )
    mark, pnl = _dense_option_pnl(market, no_exposure, path)
    np.testing.assert_allclose(fig.mtm_acct_exp, mark, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(fig.pnl_acct_scen, pnl, rtol=1e-12, atol=1e-8)
    empty = np.diff(accounts.options.indptr) == 0
    assert empty.any()
    assert np.all(fig.pnl_acct_scen[empty] == 0.0)
    assert np.all(fig.basis_acct[empty] == 0.0)


@pytest.mark.parametrize("name", MULTI_EXPIRY_CASES)
def test_book_does_not_depend_on_option_order(case_dir: Path, name: str) -> None:
    case = load_derive_case(case_dir / f"{name}.json")
    market = case.portfolio.market
    accounts = _random_accounts(market, 50, seed=5)
    order = np.random.default_rng(3).permutation(market.options.strike.size)
    opt = market.options
    shuffled_market = replace(
        market,
        options=replace(
            opt,
            expiry=opt.expiry[order],
            strike=opt.strike[order],
            is_call=opt.is_call[order],
            vol=opt.vol[order],
        ),
    )
    shuffled_accounts = replace(accounts, options=sp.csr_matrix(accounts.options[:, order]))
    a = derive_pmrm2_book_margin(market, accounts, case.parameters, chunk_size=16)
    b = derive_pmrm2_book_margin(
        shuffled_market, shuffled_accounts, case.parameters, chunk_size=1_000
    )
    np.testing.assert_allclose(b.im, a.im, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(b.mm, a.mm, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(b.worst_scenario, a.worst_scenario)
