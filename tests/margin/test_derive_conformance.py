"""Derive PMRM_2 conformance: every published case, its margin and its intermediate figures.

The vectors live outside the repository (``../shared/conformance/derive_pmrm2``); every test
here skips when that folder is absent. Tolerance: 1e-6 relative or 1e-6 absolute near zero
(``CONFORMANCE_RTOL`` / ``CONFORMANCE_ATOL``), the same for every case and every figure;
measured agreement is ~1e-14 relative (float64 Black-76 reproduces the published figures).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from pydantic import ValidationError
from typer.testing import CliRunner

from margin.profiles.derive_cases import (
    DeriveCase,
    DeriveCaseError,
    load_derive_case,
    within_tolerance,
)
from margin.profiles.derive_pmrm2 import (
    DeriveAccounts,
    DeriveMarginResult,
    DerivePMRM2Parameters,
    DeriveScenario,
    OptionSeries,
    VolShock,
    VolShockParameters,
    derive_pmrm2_book_margin,
    derive_pmrm2_margin,
    naked_shorts_per_expiry,
    settlement_forward_portions,
    vol_shock_multipliers,
)
from pipelines.cli import app

_SHARED = Path(
    os.environ.get("XMARGIN_SHARED", Path(__file__).resolve().parents[2].parent / "shared")
)
_CASE_DIR = _SHARED / "conformance" / "derive_pmrm2"
_CASE_NAMES = sorted(p.stem for p in _CASE_DIR.glob("*.json")) if _CASE_DIR.is_dir() else []
EXPECTED_CASE_COUNT = 60

cases = pytest.mark.parametrize("name", _CASE_NAMES)


@cache
def _run(path: Path) -> tuple[DeriveCase, DeriveMarginResult]:
    case = load_derive_case(path)
    return case, derive_pmrm2_margin(case.portfolio, case.parameters)


def _assert_close(actual: object, expected: object, what: str) -> None:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != published {e.shape}"
    assert within_tolerance(a, e), f"{what}: {a} != published {e}"


# ---------------------------------------------------------------------------------------------
# Every published case
# ---------------------------------------------------------------------------------------------


def test_all_published_cases_are_present(case_dir: Path) -> None:
    assert len(list(case_dir.glob("*.json"))) == EXPECTED_CASE_COUNT


@cases
def test_initial_and_maintenance_margin(case_dir: Path, name: str) -> None:
    case, result = _run(case_dir / f"{name}.json")
    _assert_close(result.im, case.expected.im, "IM")
    _assert_close(result.mm, case.expected.mm, "MM")


@cases
def test_scenario_losses(case_dir: Path, name: str) -> None:
    """Regular, tail and skew scenario P&L, in the published scenario order."""
    case, result = _run(case_dir / f"{name}.json")
    _assert_close(result.scenario_pnl, case.expected.scenario_pnl, "scenario P&L")


@cases
def test_forward_contingency(case_dir: Path, name: str) -> None:
    case, result = _run(case_dir / f"{name}.json")
    _assert_close(result.basis_contingency, case.expected.forward_contingency, "forward cont.")


@cases
def test_static_discounts(case_dir: Path, name: str) -> None:
    case, result = _run(case_dir / f"{name}.json")
    exp = case.expected
    _assert_close(result.static_discount_pos, exp.static_discount_pos, "discount (V >= 0)")
    _assert_close(result.static_discount_neg, exp.static_discount_neg, "discount (V < 0)")
    _assert_close(
        result.option_mtm_per_expiry_discounted,
        exp.option_mtm_per_expiry_discounted,
        "discounted expiry MTM",
    )


@cases
def test_vol_shock_multipliers(case_dir: Path, name: str) -> None:
    case, result = _run(case_dir / f"{name}.json")
    exp = case.expected
    _assert_close(result.vol_up_multiplier, exp.vol_up_multiplier, "vol-up multiplier")
    _assert_close(result.vol_down_multiplier, exp.vol_down_multiplier, "vol-down multiplier")
    _assert_close(result.vol_up_evaluated, exp.vol_up_evaluated, "vol-up shocked vol")
    _assert_close(result.vol_down_evaluated, exp.vol_down_evaluated, "vol-down shocked vol")


@cases
def test_skew_multipliers(case_dir: Path, name: str) -> None:
    case, result = _run(case_dir / f"{name}.json")
    exp = case.expected
    linear, absolute = result.skew[VolShock.LINEAR], result.skew[VolShock.ABS]
    _assert_close(linear.log_moneyness, exp.log_moneyness, "ln(K/F)")
    _assert_close(linear.k_star, exp.k_star, "k*")
    _assert_close(linear.cap, exp.linear_cap, "linear cap")
    _assert_close(absolute.cap, exp.abs_cap, "abs cap")
    _assert_close(linear.multiplier, exp.linear_multiplier, "linear multiplier")
    _assert_close(absolute.multiplier, exp.abs_multiplier, "abs multiplier")


@cases
def test_mark_to_market_parts(case_dir: Path, name: str) -> None:
    case, result = _run(case_dir / f"{name}.json")
    exp = case.expected
    _assert_close(result.option_mtm_per_expiry, exp.option_mtm_per_expiry, "expiry MTM")
    _assert_close(result.option_mtm, exp.option_mtm, "option MTM")
    _assert_close(result.collateral_mtm, exp.collateral_mtm, "collateral MTM")
    # The published portfolio MTM includes cash.
    _assert_close(result.mtm + result.cash, exp.portfolio_mtm, "portfolio MTM")


@cases
def test_contingencies(case_dir: Path, name: str) -> None:
    case, result = _run(case_dir / f"{name}.json")
    exp = case.expected
    _assert_close(result.mm_perp_contingency, exp.mm_perp_contingency, "MM perp cont.")
    _assert_close(result.im_perp_contingency, exp.im_perp_contingency, "IM perp cont.")
    _assert_close(result.mm_option_contingency, exp.mm_option_contingency, "MM option cont.")
    _assert_close(result.im_option_contingency, exp.im_option_contingency, "IM option cont.")
    _assert_close(result.mm_collateral_contingency, exp.mm_collateral_contingency, "MM haircut")
    _assert_close(result.im_collateral_contingency, exp.im_collateral_contingency, "IM haircut")
    _assert_close(result.oracle_contingency, exp.oracle_contingency, "oracle cont.")


# ---------------------------------------------------------------------------------------------
# Hand-checked arithmetic and invariants (independent of the published intermediate figures)
# ---------------------------------------------------------------------------------------------


def test_basic_perp_by_hand(case_dir: Path) -> None:
    """Long 1 perp at 3,100, spot 3,000, +10 funding: worst = -18 % of the perp price."""
    _, result = _run(case_dir / "test_29_perps_basic_perp.json")
    worst = 1.0 * (0.82 - 1.0) * 3_100.0
    assert result.worst_loss == pytest.approx(worst, rel=1e-12)
    assert result.mm == pytest.approx(10.0 + 0.8 * worst - 0.015 * 3_000.0, rel=1e-12)
    assert result.im == pytest.approx(10.0 + 1.0 * worst - 0.020 * 3_000.0, rel=1e-12)


def test_long_fly_is_not_recognised_as_covered(case_dir: Path) -> None:
    """+1/-2/+1 calls at three strikes: per-strike netting leaves 2 naked shorts."""
    case, result = _run(case_dir / "test_21_structures_long_fly.json")
    portfolio = case.portfolio
    naked = naked_shorts_per_expiry(portfolio.as_accounts().options, portfolio.market.options, 1)
    np.testing.assert_allclose(naked, [[2.0]])
    assert result.mm_option_contingency == pytest.approx(2.0 * portfolio.market.spot * 0.003)


def test_naked_shorts_pool_calls_and_puts_per_strike() -> None:
    options = OptionSeries(
        expiry=np.array([0, 0, 0, 1]),
        strike=np.array([100.0, 100.0, 110.0, 100.0]),
        is_call=np.array([True, False, True, True]),
        vol=np.full(4, 0.5),
    )
    positions = sp.csr_matrix(
        np.array(
            [
                [-2.0, 1.0, -1.0, -3.0],  # strike 100: net -1; 110: -1; other expiry: -3
                [-1.0, -1.0, 0.0, 2.0],  # both short at 100 count fully; long elsewhere
                [1.0, 0.0, 0.0, 0.0],  # long only
            ]
        )
    )
    naked = naked_shorts_per_expiry(positions, options, 2)
    np.testing.assert_allclose(naked, [[2.0, 3.0], [2.0, 0.0], [0.0, 0.0]])


def test_cash_moves_both_margins_one_for_one(case_dir: Path) -> None:
    case, base = _run(case_dir / "test_35_tails_general_tail_test.json")
    richer = derive_pmrm2_margin(
        replace(case.portfolio, cash=case.portfolio.cash + 1_000.0), case.parameters
    )
    assert richer.im - base.im == pytest.approx(1_000.0, abs=1e-6)
    assert richer.mm - base.mm == pytest.approx(1_000.0, abs=1e-6)


@pytest.mark.parametrize(
    "name",
    [
        "test_16_risk_cancelling_general_covered_call",
        "test_33_perps_general_perp_hedging",
        "test_44_skews_abs_as_worst_case_complex",
        "test_57_forward_cont_forward_cont_2",
    ],
)
def test_book_of_accounts_equals_one_portfolio_at_a_time(case_dir: Path, name: str) -> None:
    """Random books over a published market: the batch path equals the single path."""
    case, _ = _run(case_dir / f"{name}.json")
    market, rng = case.portfolio.market, np.random.default_rng(7)
    n, n_opt, n_coll = 40, market.options.strike.size, len(market.collateral_names)
    dense = rng.integers(-3, 4, size=(n, n_opt)) * (rng.random((n, n_opt)) < 0.6)
    accounts = DeriveAccounts(
        cash=rng.normal(0.0, 5_000.0, n),
        perp_position=(rng.integers(-2, 3, n) * (rng.random(n) < 0.5)).astype(np.float64),
        perp_unrealised=rng.normal(0.0, 50.0, n),
        options=sp.csr_matrix(dense.astype(np.float64)),
        collateral=rng.random((n, n_coll)) * (rng.random((n, n_coll)) < 0.7),
    )
    book = derive_pmrm2_book_margin(market, accounts, case.parameters, chunk_size=7)
    for i in range(n):
        single = derive_pmrm2_margin(
            replace(
                case.portfolio,
                cash=float(accounts.cash[i]),
                perp_position=float(accounts.perp_position[i]),
                perp_unrealised=float(accounts.perp_unrealised[i]),
                option_amount=dense[i].astype(np.float64),
                collateral_amount=accounts.collateral[i],
            ),
            case.parameters,
        )
        assert book.im[i] == pytest.approx(single.im, rel=1e-12, abs=1e-9)
        assert book.mm[i] == pytest.approx(single.mm, rel=1e-12, abs=1e-9)
        assert book.worst_scenario[i] == single.worst_scenario


def test_book_rejects_positions_of_the_wrong_shape(case_dir: Path) -> None:
    case, _ = _run(case_dir / "test_12_risk_cancelling_naked_short_call.json")
    accounts = replace(case.portfolio.as_accounts(), options=sp.csr_matrix(np.ones((1, 3))))
    with pytest.raises(ValueError, match=r"option positions are 1 × 3, expected 1 accounts × 1"):
        derive_pmrm2_book_margin(case.portfolio.market, accounts, case.parameters)


def test_skew_scenario_must_keep_spot(case_dir: Path) -> None:
    case, _ = _run(case_dir / "test_12_risk_cancelling_naked_short_call.json")
    data = case.parameters.model_dump()
    data["scenarios"] = [
        DeriveScenario(spot_shock=1.1, vol_shock=VolShock.LINEAR, dampening=1.0).model_dump()
    ]
    with pytest.raises(ValidationError, match="skew scenario must have spot_shock 1"):
        DerivePMRM2Parameters.model_validate(data)


def test_vol_shock_multiplier_closed_form() -> None:
    params = VolShockParameters(
        vol_range_up=0.5,
        vol_range_down=0.275,
        short_term_power=0.3,
        long_term_power=0.13,
        dte_floor_days=1.0,
        min_vol_up_shock=0.45,
    )
    day = 86_400.0
    up, down = vol_shock_multipliers(np.array([0.5 * day, 7 * day, 30 * day, 90 * day]), params)
    expected_mult = np.array([30.0**0.3, (30 / 7) ** 0.3, 1.0, (1 / 3) ** 0.13])
    np.testing.assert_allclose(up, 1 + 0.5 * expected_mult, rtol=1e-14)
    np.testing.assert_allclose(down, 1 - 0.275 * expected_mult, rtol=1e-14)


def test_settlement_portions_split_inside_the_twap_window() -> None:
    variable, fixed = settlement_forward_portions([100.0, 100.0, 100.0], [3_600.0, 900.0, 0.0])
    np.testing.assert_allclose(variable, [100.0, 50.0, 0.0])
    np.testing.assert_allclose(fixed, [0.0, 50.0, 100.0])


# ---------------------------------------------------------------------------------------------
# Loader errors and the CLI
# ---------------------------------------------------------------------------------------------


def test_loader_names_file_and_field(case_dir: Path, tmp_path: Path) -> None:
    data = json.loads((case_dir / "test_12_risk_cancelling_naked_short_call.json").read_text())
    del data["Scenario"]["SpotPrice"]
    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DeriveCaseError, match=r"broken\.json: field Scenario\.SpotPrice"):
        load_derive_case(bad)


def test_loader_rejects_option_without_feed(case_dir: Path, tmp_path: Path) -> None:
    data = json.loads((case_dir / "test_12_risk_cancelling_naked_short_call.json").read_text())
    data["Scenario"]["Options"][0]["Expiry"] = 123
    bad = tmp_path / "nofeed.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DeriveCaseError, match=r"expiry 123 s has no entry in OptionFeeds"):
        load_derive_case(bad)


def test_loader_rejects_non_json(tmp_path: Path) -> None:
    bad = tmp_path / "text.json"
    bad.write_text("not json")
    with pytest.raises(DeriveCaseError, match="not a JSON document"):
        load_derive_case(bad)


def test_cli_prints_one_line_per_case_and_succeeds(case_dir: Path) -> None:
    files = [
        str(case_dir / f"{n}.json")
        for n in ("test_12_risk_cancelling_naked_short_call", "test_29_perps_basic_perp")
    ]
    result = CliRunner().invoke(app, ["conformance", "derive", *files])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["case"] for line in lines] == [
        "test_12_risk_cancelling_naked_short_call",
        "test_29_perps_basic_perp",
    ]
    assert all(line["ok"] for line in lines)
    assert set(lines[0]) == {"case", "im", "mm", "expected_im", "expected_mm", "ok"}


def test_cli_exits_non_zero_when_a_case_misses(case_dir: Path, tmp_path: Path) -> None:
    data = json.loads((case_dir / "test_29_perps_basic_perp.json").read_text())
    data["Result"]["IM"] = data["Result"]["IM"] + 1.0
    wrong = tmp_path / "wrong_im.json"
    wrong.write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["conformance", "derive", str(wrong)])
    assert result.exit_code == 1
    assert json.loads(result.output)["ok"] is False
