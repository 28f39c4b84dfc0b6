"""Load Derive's published PMRM_2 portfolio cases into typed objects.

A case file (JSON) has three parts: ``Scenario`` (account and market), ``Parameters``
(scenarios and methodology parameters) and ``Result`` (expected margin and every intermediate
figure). :func:`load_derive_case` turns one file into a :class:`DeriveCase` holding a
:class:`~margin.profiles.derive_pmrm2.DerivePortfolio`, the
:class:`~margin.profiles.derive_pmrm2.DerivePMRM2Parameters` and the
:class:`DeriveExpected` figures. Numbers may be JSON numbers or decimal strings.

Conventions of the case files (and of the harness that replays them on chain):

- Times to expiry are seconds from the valuation time; ``DTE_FLOOR`` is in days.
- ``IM_PERP_PERCENT`` / ``IM_OPTION_PERCENT`` and a collateral's ``IMHaircut`` are *added* to
  the MM figures; the ``*_NORMAL`` totals are informational and must equal the sum.
- Within 30 minutes of expiry the forward is split into a fixed (already averaged) and a
  variable part, see :func:`~margin.profiles.derive_pmrm2.settlement_forward_portions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from margin.profiles.derive_pmrm2 import (
    BasisContingencyParameters,
    CollateralParameters,
    ContingencyParameters,
    DeriveMarket,
    DerivePMRM2Parameters,
    DerivePortfolio,
    DeriveScenario,
    ExpiryFeeds,
    MarginParameters,
    OptionSeries,
    SkewShockParameters,
    VolShock,
    VolShockParameters,
    settlement_forward_portions,
)
from margin.typing import FloatArray

__all__ = [
    "CONFORMANCE_ATOL",
    "CONFORMANCE_RTOL",
    "DeriveCase",
    "DeriveCaseError",
    "DeriveExpected",
    "load_derive_case",
    "load_derive_cases",
    "within_tolerance",
]

#: Published figures must be reproduced to 1e-6 relative, or 1e-6 absolute near zero.
CONFORMANCE_RTOL = 1e-6
CONFORMANCE_ATOL = 1e-6


_VOL_SHOCKS = {
    "Up": VolShock.UP,
    "Down": VolShock.DOWN,
    "None": VolShock.NONE,
    "LINEAR": VolShock.LINEAR,
    "ABS": VolShock.ABS,
}


class DeriveCaseError(ValueError):
    """A case file is missing, unreadable or does not follow the case format."""


# --------------------------------------------------------------------------------------------
# Raw file schema (field names as published)
# --------------------------------------------------------------------------------------------


class _Raw(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _RawCollateral(_Raw):
    Name: str
    Amount: float
    Price: float
    Confidence: float = Field(ge=0.0, le=1.0)
    IsRiskCancelling: bool
    IMHaircut: float
    MMHaircut: float


class _RawOption(_Raw):
    Expiry: int
    Strike: float = Field(gt=0.0)
    IsCall: bool
    MarkVol: float = Field(ge=0.0)
    MarkDiscount: float
    Amount: float
    k: float
    linear_mult_cap: float
    abs_mult_cap: float
    k_star: float
    linear_multiplier: float
    abs_multiplier: float


class _RawFeed(_Raw):
    FeedExpiry: int
    Forward: float = Field(gt=0.0)
    ForwardConfidence: float = Field(ge=0.0, le=1.0)
    Rate: float
    RateConfidence: float = Field(ge=0.0, le=1.0)
    OptionVolConfidences: float = Field(ge=0.0, le=1.0)


class _RawScenarioPart(_Raw):
    Cash: float
    Collaterals: list[_RawCollateral]
    SpotPrice: float = Field(gt=0.0)
    SpotConfidence: float = Field(ge=0.0, le=1.0)
    NumPerps: float
    PerpPrice: float = Field(ge=0.0)
    PerpConfidence: float = Field(ge=0.0, le=1.0)
    UnrealisedPerpPNL: float
    UnrealisedFunding: float
    StablePrice: float = Field(gt=0.0)
    Options: list[_RawOption]
    OptionFeeds: list[_RawFeed]


class _RawScenario(_Raw):
    SpotShock: float
    VolShockDirection: Literal["Up", "Down", "None", "LINEAR", "ABS"]
    DampeningFactor: float


class _RawSkew(_Raw):
    LINEAR_SCALE_CAP: float
    LINEAR_CBASE: float
    ABS_SCALE_CAP: float
    ABS_CBASE: float
    MIN_K_STAR: float
    MIN_WIDTH_SCALE: float
    VOL_PARAM_STATIC: float
    VOL_PARAM_SCALE: float


class _RawVolShock(_Raw):
    VOLRANGEUP: float
    MIN_VOL_EVAL_SHOCKED: float
    VOLRANGEDOWN: float
    SHORTTERMPOWER: float
    LONGTERMPOWER: float
    DTE_FLOOR: float


class _RawMargin(_Raw):
    MM_LOSS_FACTOR: float
    IM_LOSS_FACTOR: float
    SHORT_RATE_MULTSCALE: float
    LONG_RATE_MULTSCALE: float
    SHORT_RATE_ADDSCALE: float
    LONG_RATE_ADDSCALE: float
    BASE_STATIC_DISCOUNT: float
    BASE_STATIC_DISCOUNT_NEG: float


class _RawBasis(_Raw):
    SCENARIO_SPOT_UP: float
    SCENARIO_SPOT_DOWN: float
    BASIS_CONT_ADD_FACTOR: float
    BASIS_CONT_MULT_FACTOR: float


class _RawOther(_Raw):
    PEG_LOSS_THRESHOLD: float
    PEG_LOSS_FACTOR: float
    CONF_THRESHOLD: float
    CONF_MARGIN: float
    MM_PERP_PERCENT: float
    IM_PERP_PERCENT: float
    MM_OPTION_PERCENT: float
    IM_OPTION_PERCENT: float


class _RawParameters(_Raw):
    Scenarios: list[_RawScenario] = Field(min_length=1)
    SkewShock: _RawSkew
    VolShock: _RawVolShock
    Margin: _RawMargin
    BasisContingency: _RawBasis
    OtherContingency: _RawOther


class _RawResult(_Raw):
    IM: float
    MM: float
    reg_losses: list[tuple[float, int, float]]
    tail_losses: list[tuple[float, int, float]]
    skew_losses: list[tuple[str, float]]
    ForwardContingency: float
    PortfolioMTM: float
    OptionMTM: float
    OptionMTMPerExpiry: list[float]
    OptionMTMPerExpiryDiscounted: list[float]
    CollateralMTM: float
    MMPerpCont: float
    IMPerpCont: float
    MMBaseCont: float
    IMBaseCont: float
    MMOptionCont: float
    IMOptionCont: float
    OracleCont: float
    discount_factors: list[tuple[float, float]]
    VolShockUpMultiplier: list[float]
    VolShockDownMultiplier: list[float]
    VolShockUpEvaluated: list[float]
    VolShockDownEvaluated: list[float]


class _RawCase(_Raw):
    Scenario: _RawScenarioPart
    Parameters: _RawParameters
    Result: _RawResult


# --------------------------------------------------------------------------------------------
# Typed case
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeriveExpected:
    """Published figures of one case (USD; contingencies as positive add-ons).

    ``scenario_pnl`` follows the order of the case's scenarios (regular, then tail, then
    skew). Per-option arrays follow the case's option order; per-expiry arrays follow the
    order of the case's option feeds.
    """

    im: float
    mm: float
    scenario_pnl: FloatArray
    forward_contingency: float
    portfolio_mtm: float
    option_mtm: float
    option_mtm_per_expiry: FloatArray
    option_mtm_per_expiry_discounted: FloatArray
    collateral_mtm: float
    mm_perp_contingency: float
    im_perp_contingency: float
    mm_option_contingency: float
    im_option_contingency: float
    mm_collateral_contingency: float
    im_collateral_contingency: float
    oracle_contingency: float
    static_discount_pos: FloatArray
    static_discount_neg: FloatArray
    vol_up_multiplier: FloatArray
    vol_down_multiplier: FloatArray
    vol_up_evaluated: FloatArray
    vol_down_evaluated: FloatArray
    log_moneyness: FloatArray
    linear_cap: FloatArray
    abs_cap: FloatArray
    k_star: FloatArray
    linear_multiplier: FloatArray
    abs_multiplier: FloatArray


@dataclass(frozen=True)
class DeriveCase:
    """One published case: name, source file, inputs and expected figures."""

    name: str
    path: Path
    portfolio: DerivePortfolio
    parameters: DerivePMRM2Parameters
    expected: DeriveExpected


def within_tolerance(
    actual: float | FloatArray,
    expected: float | FloatArray,
    rtol: float = CONFORMANCE_RTOL,
    atol: float = CONFORMANCE_ATOL,
) -> bool:
    """True when every ``|actual - expected| <= atol + rtol |expected|`` (shapes must agree)."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return a.shape == e.shape and bool(np.all(np.abs(a - e) <= atol + rtol * np.abs(e)))


def load_derive_cases(paths: list[Path]) -> list[DeriveCase]:
    """Load several case files (in the order given)."""
    return [load_derive_case(p) for p in paths]


def load_derive_case(path: str | Path) -> DeriveCase:
    """Read and validate one case file.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    DeriveCaseError
        The file is not JSON, a field is missing or invalid (the message names the file and
        the field path), or options refer to an expiry without a feed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Derive case file not found: {path}")
    try:
        data: Any = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeriveCaseError(f"{path}: not a JSON document ({exc})") from None
    try:
        raw = _RawCase.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "<root>"
        raise DeriveCaseError(f"{path}: field {field}: {first['msg']}") from None
    name = path.stem
    portfolio = _portfolio(raw.Scenario, path)
    parameters = _parameters(raw.Parameters, raw.Scenario.Collaterals)
    expected = _expected(raw, path)
    return DeriveCase(
        name=name, path=path, portfolio=portfolio, parameters=parameters, expected=expected
    )


def _portfolio(raw: _RawScenarioPart, path: Path) -> DerivePortfolio:
    feeds = raw.OptionFeeds
    feed_index = {f.FeedExpiry: i for i, f in enumerate(feeds)}
    if len(feed_index) != len(feeds):
        raise DeriveCaseError(f"{path}: field Scenario.OptionFeeds: an expiry appears twice")
    missing = sorted({o.Expiry for o in raw.Options} - feed_index.keys())
    if missing:
        raise DeriveCaseError(
            f"{path}: field Scenario.Options: expiry {missing[0]} s has no entry in OptionFeeds"
        )
    names = [c.Name for c in raw.Collaterals]
    if len(set(names)) != len(names):
        raise DeriveCaseError(
            f"{path}: field Scenario.Collaterals: a collateral name appears twice"
        )

    seconds = np.array([f.FeedExpiry for f in feeds], dtype=np.float64)
    variable, fixed = settlement_forward_portions([f.Forward for f in feeds], seconds)
    expiries = ExpiryFeeds(
        seconds_to_expiry=seconds,
        forward_variable=variable,
        forward_fixed=fixed,
        rate=np.array([f.Rate for f in feeds], dtype=np.float64),
        confidence=np.array(
            [min(f.ForwardConfidence, f.RateConfidence, f.OptionVolConfidences) for f in feeds],
            dtype=np.float64,
        ),
    )
    options = OptionSeries(
        expiry=np.array([feed_index[o.Expiry] for o in raw.Options], dtype=np.intp),
        strike=np.array([o.Strike for o in raw.Options], dtype=np.float64),
        is_call=np.array([o.IsCall for o in raw.Options], dtype=bool),
        vol=np.array([o.MarkVol for o in raw.Options], dtype=np.float64),
    )
    market = DeriveMarket(
        spot=raw.SpotPrice,
        spot_confidence=raw.SpotConfidence,
        stable_price=raw.StablePrice,
        perp_price=raw.PerpPrice,
        perp_confidence=raw.PerpConfidence,
        expiries=expiries,
        options=options,
        collateral_names=tuple(names),
        collateral_price=np.array([c.Price for c in raw.Collaterals], dtype=np.float64),
        collateral_confidence=np.array([c.Confidence for c in raw.Collaterals], dtype=np.float64),
    )
    return DerivePortfolio(
        market=market,
        cash=raw.Cash,
        perp_position=raw.NumPerps,
        perp_unrealised=raw.UnrealisedPerpPNL + raw.UnrealisedFunding,
        option_amount=np.array([o.Amount for o in raw.Options], dtype=np.float64),
        collateral_amount=np.array([c.Amount for c in raw.Collaterals], dtype=np.float64),
    )


def _parameters(raw: _RawParameters, collaterals: list[_RawCollateral]) -> DerivePMRM2Parameters:
    vs, mg, bc, oc, sk = (
        raw.VolShock,
        raw.Margin,
        raw.BasisContingency,
        raw.OtherContingency,
        raw.SkewShock,
    )
    return DerivePMRM2Parameters(
        scenarios=tuple(
            DeriveScenario(
                spot_shock=s.SpotShock,
                vol_shock=_VOL_SHOCKS[s.VolShockDirection],
                dampening=s.DampeningFactor,
            )
            for s in raw.Scenarios
        ),
        vol_shock=VolShockParameters(
            vol_range_up=vs.VOLRANGEUP,
            vol_range_down=vs.VOLRANGEDOWN,
            short_term_power=vs.SHORTTERMPOWER,
            long_term_power=vs.LONGTERMPOWER,
            dte_floor_days=vs.DTE_FLOOR,
            min_vol_up_shock=vs.MIN_VOL_EVAL_SHOCKED,
        ),
        margin=MarginParameters(
            im_factor=mg.IM_LOSS_FACTOR,
            mm_factor=mg.MM_LOSS_FACTOR,
            long_base_static_discount=mg.BASE_STATIC_DISCOUNT,
            short_base_static_discount=mg.BASE_STATIC_DISCOUNT_NEG,
            long_rate_mult_scale=mg.LONG_RATE_MULTSCALE,
            long_rate_add_scale=mg.LONG_RATE_ADDSCALE,
            short_rate_mult_scale=mg.SHORT_RATE_MULTSCALE,
            short_rate_add_scale=mg.SHORT_RATE_ADDSCALE,
        ),
        basis=BasisContingencyParameters(
            spot_up=bc.SCENARIO_SPOT_UP,
            spot_down=bc.SCENARIO_SPOT_DOWN,
            add_factor=bc.BASIS_CONT_ADD_FACTOR,
            mult_factor=bc.BASIS_CONT_MULT_FACTOR,
        ),
        contingency=ContingencyParameters(
            peg_loss_threshold=oc.PEG_LOSS_THRESHOLD,
            peg_loss_factor=oc.PEG_LOSS_FACTOR,
            confidence_threshold=oc.CONF_THRESHOLD,
            confidence_margin=oc.CONF_MARGIN,
            mm_perp_percent=oc.MM_PERP_PERCENT,
            im_perp_percent=oc.IM_PERP_PERCENT,
            mm_option_percent=oc.MM_OPTION_PERCENT,
            im_option_percent=oc.IM_OPTION_PERCENT,
        ),
        skew=SkewShockParameters(
            linear_base_cap=sk.LINEAR_SCALE_CAP,
            linear_c_base=sk.LINEAR_CBASE,
            abs_base_cap=sk.ABS_SCALE_CAP,
            abs_c_base=sk.ABS_CBASE,
            min_k_star=sk.MIN_K_STAR,
            width_scale=sk.MIN_WIDTH_SCALE,
            vol_param_static=sk.VOL_PARAM_STATIC,
            vol_param_scale=sk.VOL_PARAM_SCALE,
        ),
        collaterals={
            c.Name: CollateralParameters(
                mm_haircut=c.MMHaircut, im_haircut=c.IMHaircut, risk_cancelling=c.IsRiskCancelling
            )
            for c in collaterals
        },
    )


def _expected(raw: _RawCase, path: Path) -> DeriveExpected:
    res, opts = raw.Result, raw.Scenario.Options
    losses = (
        [row[2] for row in res.reg_losses]
        + [row[2] for row in res.tail_losses]
        + [row[1] for row in res.skew_losses]
    )
    if len(losses) != len(raw.Parameters.Scenarios):
        raise DeriveCaseError(
            f"{path}: field Result: {len(losses)} scenario losses for "
            f"{len(raw.Parameters.Scenarios)} scenarios in Parameters.Scenarios"
        )

    def arr(values: list[float]) -> FloatArray:
        return np.asarray(values, dtype=np.float64)

    return DeriveExpected(
        im=res.IM,
        mm=res.MM,
        scenario_pnl=arr(losses),
        forward_contingency=res.ForwardContingency,
        portfolio_mtm=res.PortfolioMTM,
        option_mtm=res.OptionMTM,
        option_mtm_per_expiry=arr(res.OptionMTMPerExpiry),
        option_mtm_per_expiry_discounted=arr(res.OptionMTMPerExpiryDiscounted),
        collateral_mtm=res.CollateralMTM,
        # The file stores add-ons as negative contributions to margin.
        mm_perp_contingency=-res.MMPerpCont,
        im_perp_contingency=-res.IMPerpCont,
        mm_option_contingency=-res.MMOptionCont,
        im_option_contingency=-res.IMOptionCont,
        mm_collateral_contingency=-res.MMBaseCont,
        im_collateral_contingency=-res.IMBaseCont,
        oracle_contingency=-res.OracleCont,
        static_discount_pos=arr([d[0] for d in res.discount_factors]),
        static_discount_neg=arr([d[1] for d in res.discount_factors]),
        vol_up_multiplier=arr(res.VolShockUpMultiplier),
        vol_down_multiplier=arr(res.VolShockDownMultiplier),
        vol_up_evaluated=arr(res.VolShockUpEvaluated),
        vol_down_evaluated=arr(res.VolShockDownEvaluated),
        log_moneyness=arr([o.k for o in opts]),
        linear_cap=arr([o.linear_mult_cap for o in opts]),
        abs_cap=arr([o.abs_mult_cap for o in opts]),
        k_star=arr([o.k_star for o in opts]),
        linear_multiplier=arr([o.linear_multiplier for o in opts]),
        abs_multiplier=arr([o.abs_multiplier for o in opts]),
    )
