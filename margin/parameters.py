"""Risk parameters: the typed content of a parameter file.

Every number an exchange receives is validated here, so NaN, zero or negative parameters are
impossible by construction: fields are constrained (``gt=0``, finite) and cross-field rules
(MM below IM, weights in (0, 1], symmetric correlation matrices) are checked on creation.

Units: scan ranges, vol shocks, fractions and haircuts are **decimal fractions** (0.05 = 5%) of
price, of implied vol, or of notional; ``sigma`` is the **h-day decimal volatility** (square root
of the forecaster's h-day variance); horizons are in days.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal["1.0"] = "1.0"

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
Weight = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Correlation = Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]
Symbol = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Z0-9]+$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScanRange(_Frozen):
    """Price scan range per side, a decimal fraction of the price.

    ``long`` is the down-move a long position must survive (< 1, a price cannot fall 100%),
    ``short`` the up-move a short position must survive.
    """

    long: Fraction
    short: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)]


class VolShock(_Frozen):
    """Implied-vol shocks: ``vol' = vol × (1 ± shock × (reference_dte / max(dte_floor, dte))^p)``.

    ``power_short_dte`` applies below ``reference_dte_days``, ``power_long_dte`` above it.
    ``min_shocked_vol`` is an annualised decimal vol below which a shocked vol never falls.
    """

    up: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)]
    down: Fraction
    power_short_dte: Annotated[float, Field(gt=0, le=2, allow_inf_nan=False)] = 0.30
    power_long_dte: Annotated[float, Field(gt=0, le=2, allow_inf_nan=False)] = 0.13
    reference_dte_days: PositiveFloat = 30.0
    dte_floor_days: PositiveFloat = 1.0
    min_shocked_vol: Fraction = 0.05
    source: Literal["dvol", "realized_proxy", "default"] = "dvol"


class TailMove(_Frozen):
    """An extreme price move (decimal, -0.66 = -66%) and its weight in (0, 1].

    Weights follow the linear-equivalent rule ``weight × |move| = constant``.
    """

    move: Annotated[float, Field(gt=-1, le=10, allow_inf_nan=False)]
    weight: Weight

    @model_validator(mode="after")
    def _non_zero(self) -> TailMove:
        if self.move == 0:
            raise ValueError("a tail move must be non-zero")
        return self


class PerpMargin(_Frozen):
    """Perpetual margin fractions of notional and the square-root size add-on.

    Effective IMF for a position of notional ``N`` (quote currency):
    ``imf + size_addon × sqrt(N)``; ``size_addon`` is in 1/sqrt(quote currency).
    """

    imf: Weight
    mmf: Weight
    size_addon: PositiveFloat

    @model_validator(mode="after")
    def _mm_below_im(self) -> PerpMargin:
        if self.mmf > self.imf:
            raise ValueError(f"perp MMF {self.mmf} exceeds IMF {self.imf}")
        return self


class Haircut(_Frozen):
    """Collateral haircut (decimal fraction of value) at the collateral's own horizon."""

    im: Fraction
    mm: Fraction
    horizon_days: Annotated[int, Field(ge=1, le=365)]

    @model_validator(mode="after")
    def _mm_below_im(self) -> Haircut:
        if self.mm > self.im:
            raise ValueError(f"MM haircut {self.mm} exceeds IM haircut {self.im}")
        return self


class BoundEvent(_Frozen):
    """An anti-procyclicality rule or bound that changed a value (``raw`` → ``bounded``)."""

    rule: Literal["decrease_cap", "floor", "buffer", "buffer_release", "stress_weight"]
    field: str
    raw: PositiveFloat
    bounded: PositiveFloat


class ApcState(_Frozen):
    """Which anti-procyclicality tools are on, their settings, and what bit."""

    buffer: bool = False
    buffer_rate: Annotated[float, Field(ge=0.25, le=5, allow_inf_nan=False)] = 0.25
    buffer_released: Probability = 0.0
    stress_weight: bool = False
    stress_weight_share: Annotated[float, Field(ge=0.25, le=1, allow_inf_nan=False)] = 0.25
    floor: bool = False
    floor_lookback_days: Annotated[int, Field(ge=0)] = 0
    max_decrease: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.10
    bounds_bit: tuple[BoundEvent, ...] = ()


class Fallback(_Frozen):
    """Where the forecast behind the parameters came from; never silent."""

    used: bool = False
    source: Literal["forecast", "previous", "default"] = "forecast"
    reason: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Fallback:
        if self.used != (self.source != "forecast"):
            raise ValueError("fallback.used must be true exactly when source is not 'forecast'")
        if self.used and not self.reason:
            raise ValueError("a fallback must state its reason")
        return self


class Provenance(_Frozen):
    """What produced the parameters."""

    model: str = Field(min_length=1)
    mlflow_run_id: str | None = None
    registry_version: str | None = None
    data_digest: str = Field(min_length=1)
    code_version: str = Field(min_length=1)


class RiskParameters(_Frozen):
    """Margin parameters of one underlying at one as-of date."""

    underlying: Symbol
    as_of: dt.date
    horizon_days: Annotated[int, Field(ge=1, le=30)]
    im_confidence: Annotated[float, Field(gt=0.5, lt=1, allow_inf_nan=False)]
    mm_confidence: Annotated[float, Field(gt=0.5, lt=1, allow_inf_nan=False)]
    sigma: Annotated[float, Field(gt=0, lt=5, allow_inf_nan=False)]
    model: str = Field(min_length=1)
    scan_im: ScanRange
    scan_mm: ScanRange
    vol_shock: VolShock
    tails: tuple[TailMove, ...] = Field(min_length=1)
    perp: PerpMargin
    haircut: Haircut
    apc: ApcState
    fallback: Fallback = Fallback()

    @model_validator(mode="after")
    def _consistent(self) -> RiskParameters:
        if self.mm_confidence > self.im_confidence:
            raise ValueError(
                f"{self.underlying}: MM confidence {self.mm_confidence} exceeds IM confidence "
                f"{self.im_confidence}"
            )
        for side in ("long", "short"):
            mm, im = getattr(self.scan_mm, side), getattr(self.scan_im, side)
            if mm > im:
                raise ValueError(f"{self.underlying}: MM {side} scan range {mm} exceeds IM {im}")
        return self


class CorrelationMatrix(_Frozen):
    """Symmetric correlation matrix over ``symbols`` (row-major lists), unit diagonal."""

    symbols: tuple[Symbol, ...] = Field(min_length=1)
    values: tuple[tuple[Correlation, ...], ...]

    @model_validator(mode="after")
    def _valid(self) -> CorrelationMatrix:
        n = len(self.symbols)
        if len(set(self.symbols)) != n:
            raise ValueError("correlation symbols must be unique")
        if len(self.values) != n or any(len(row) != n for row in self.values):
            raise ValueError(f"correlation matrix must be {n}×{n}")
        for i in range(n):
            if not math.isclose(self.values[i][i], 1.0, abs_tol=1e-9):
                raise ValueError(f"correlation diagonal of {self.symbols[i]} is not 1")
            for j in range(i):
                if not math.isclose(self.values[i][j], self.values[j][i], abs_tol=1e-9):
                    raise ValueError(
                        f"correlation of {self.symbols[i]}/{self.symbols[j]} is not symmetric"
                    )
        return self


class Offsets(_Frozen):
    """Cross-underlying offsets: EWMA and stressed correlations, capped (EMIR Art. 27)."""

    ewma: CorrelationMatrix
    stressed: CorrelationMatrix
    ewma_lambda: Fraction = 0.94
    offset_cap: Weight = 0.80

    @model_validator(mode="after")
    def _same_symbols(self) -> Offsets:
        if self.ewma.symbols != self.stressed.symbols:
            raise ValueError("EWMA and stressed correlations must cover the same symbols")
        return self


class ParameterChange(_Frozen):
    """The change of one numeric field against the previous file."""

    underlying: Symbol
    field: str
    previous: FiniteFloat
    current: FiniteFloat
    relative_change: FiniteFloat


class BacktestRow(_Frozen):
    """One row of the backtest summary carried in the file (columns of backtest_summary.csv)."""

    model: str
    symbol: str
    level: Literal["IM", "MM"]
    side: Literal["long", "short"]
    n: Annotated[int, Field(ge=0)]
    breaches: Annotated[int, Field(ge=0)]
    breach_rate: Probability | None
    expected_rate: Probability
    kupiec_p: Probability | None
    christoffersen_ind_p: Probability | None
    christoffersen_cc_p: Probability | None
    zone: Literal["green", "yellow", "red"] | None
    avg_margin: FiniteFloat | None
    peak_to_trough: FiniteFloat | None
    max_increase_1d: FiniteFloat | None
    max_increase_5d: FiniteFloat | None
    max_increase_30d: FiniteFloat | None


class ParameterSet(_Frozen):
    """Everything one parameter file carries."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    as_of: dt.date
    effective_from: dt.datetime
    horizon_days: Annotated[int, Field(ge=1, le=30)]
    im_confidence: Annotated[float, Field(gt=0.5, lt=1, allow_inf_nan=False)]
    mm_confidence: Annotated[float, Field(gt=0.5, lt=1, allow_inf_nan=False)]
    underlyings: dict[Symbol, RiskParameters] = Field(min_length=1)
    offsets: Offsets | None = None
    changes: tuple[ParameterChange, ...] = ()
    previous_version: str | None = None
    backtest_summary: tuple[BacktestRow, ...] = ()
    provenance: Provenance

    @model_validator(mode="after")
    def _consistent(self) -> ParameterSet:
        if self.effective_from.tzinfo is None:
            raise ValueError("effective_from must carry a time zone (UTC)")
        for key, params in self.underlyings.items():
            if key != params.underlying:
                raise ValueError(f"underlying key {key} holds parameters of {params.underlying}")
            if params.as_of != self.as_of or params.horizon_days != self.horizon_days:
                raise ValueError(f"{key}: as-of date or horizon differs from the file's")
        if self.offsets is not None:
            missing = set(self.underlyings) - set(self.offsets.ewma.symbols)
            if missing:
                raise ValueError(f"correlations miss underlyings {sorted(missing)}")
        return self
