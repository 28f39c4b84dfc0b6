"""Methodology profiles: configurations that reproduce existing exchanges' margin."""

from margin.profiles.deribit_pm import DeribitMargin, DeribitPMParameters, deribit_pm_margin
from margin.profiles.derive_cases import (
    DeriveCase,
    DeriveCaseError,
    DeriveExpected,
    load_derive_case,
    load_derive_cases,
)
from margin.profiles.derive_pmrm2 import (
    DeriveAccounts,
    DeriveBookMargin,
    DeriveMarginResult,
    DeriveMarket,
    DerivePMRM2Parameters,
    DerivePortfolio,
    derive_pmrm2_book_margin,
    derive_pmrm2_margin,
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
from margin.profiles.paradex_pm import ParadexMargin, ParadexPMParameters, paradex_margin
from margin.profiles.span import (
    DEFAULT_DELTA_WEIGHTS,
    SpanMargin,
    SpanParameters,
    inter_commodity_credit,
    span_composite_delta,
    span_margin,
)

__all__ = [
    "DEFAULT_DELTA_WEIGHTS",
    "DeribitMargin",
    "DeribitPMParameters",
    "DeriveAccounts",
    "DeriveBookMargin",
    "DeriveCase",
    "DeriveCaseError",
    "DeriveExpected",
    "DeriveMarginResult",
    "DeriveMarket",
    "DerivePMRM2Parameters",
    "DerivePortfolio",
    "DriftMarket",
    "DydxLiquidityTier",
    "HyperliquidMarginTable",
    "HyperliquidTier",
    "ParadexMargin",
    "ParadexPMParameters",
    "SpanMargin",
    "SpanParameters",
    "deribit_pm_margin",
    "derive_pmrm2_book_margin",
    "derive_pmrm2_margin",
    "drift_perp_margin",
    "dydx_margin",
    "hyperliquid_margin",
    "inter_commodity_credit",
    "load_derive_case",
    "load_derive_cases",
    "paradex_margin",
    "span_composite_delta",
    "span_margin",
]
