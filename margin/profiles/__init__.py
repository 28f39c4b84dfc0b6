"""Methodology profiles: configurations that reproduce existing exchanges' margin."""

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

__all__ = [
    "DeriveAccounts",
    "DeriveBookMargin",
    "DeriveCase",
    "DeriveCaseError",
    "DeriveExpected",
    "DeriveMarginResult",
    "DeriveMarket",
    "DerivePMRM2Parameters",
    "DerivePortfolio",
    "derive_pmrm2_book_margin",
    "derive_pmrm2_margin",
    "load_derive_case",
    "load_derive_cases",
]
