"""Configuration of the cross-margin engine (pydantic, validated, immutable).

All moves and shocks are **decimal** (0.16 = 16 %); vols are annualised decimal; amounts are
USD. A :class:`Methodology` is everything the engine needs besides the book: per-underlying
scenario grids, loss factors for IM and MM, add-on parameters, the cross-underlying offset rule
and the settlement precision. See ``docs/engine.md`` for the formulas.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AddOnConfig",
    "Methodology",
    "OffsetConfig",
    "ScenarioConfig",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScenarioConfig(_Frozen):
    """Scenario grid of one underlying.

    The standard grid is ``2 * n_price_steps + 1`` spot moves, ``n_price_steps`` evenly spaced
    on each side of 0 in ``[-range_down, +range_up]``, crossed with vol up / unchanged / down
    (weight 1), plus
    tail moves (vol up, weight ``tail_weights``: the P&L is multiplied by the weight,
    "dampening"). Option vol shocks scale with expiry::

        mult = (30 / max(DTE, dte_floor_days)) ** power,
        power = short_term_power if DTE < 30 else long_term_power
        vol_up = max(vol * (1 + vol_up * mult), min_vol_up)
        vol_down = max(vol * (1 - vol_down * mult), min_vol)

    The grid is symmetric (``range_down = range_up = price_range``) unless
    ``price_range_down`` / ``price_range_up`` set a side on its own, e.g. a long scan range
    (the fall a long must survive) below the short one (the rise a short must survive).
    """

    price_range: float = Field(0.16, gt=0.0, lt=1.0, description="decimal spot scan range")
    price_range_down: float | None = Field(
        None, gt=0.0, lt=1.0, description="decimal down-move scan range (default price_range)"
    )
    price_range_up: float | None = Field(
        None, gt=0.0, lt=10.0, description="decimal up-move scan range (default price_range)"
    )
    n_price_steps: int = Field(4, ge=1, le=20, description="price points per side")
    vol_up: float = Field(0.5, ge=0.0, description="relative vol shock up at 30 DTE")
    vol_down: float = Field(0.25, ge=0.0, lt=1.0, description="relative vol shock down at 30 DTE")
    short_term_power: float = Field(0.30, ge=0.0)
    long_term_power: float = Field(0.13, ge=0.0)
    dte_floor_days: float = Field(1.0, gt=0.0)
    min_vol_up: float = Field(0.40, ge=0.0, description="floor of the up-shocked vol")
    min_vol: float = Field(0.01, gt=0.0, description="floor of any shocked vol")
    tail_moves: tuple[float, ...] = (-0.66, -0.33, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
    tail_weights: tuple[float, ...] = (0.18, 0.36, 0.24, 0.12, 0.06, 0.04, 0.03, 0.024)

    @model_validator(mode="after")
    def _tails(self) -> ScenarioConfig:
        if len(self.tail_moves) != len(self.tail_weights):
            raise ValueError("tail_moves and tail_weights must have the same length")
        if any(m <= -1.0 for m in self.tail_moves):
            raise ValueError("tail_moves must be > -1 (prices stay positive)")
        if any(not 0.0 <= w <= 1.0 for w in self.tail_weights):
            raise ValueError("tail_weights must lie in [0, 1]")
        return self

    @property
    def range_down(self) -> float:
        """Largest down-move of the standard grid (decimal, positive)."""
        return self.price_range if self.price_range_down is None else self.price_range_down

    @property
    def range_up(self) -> float:
        """Largest up-move of the standard grid (decimal)."""
        return self.price_range if self.price_range_up is None else self.price_range_up

    @property
    def is_symmetric(self) -> bool:
        """True when both sides of the standard grid span ``price_range``."""
        return self.range_down == self.price_range and self.range_up == self.price_range

    def scaled(self, factor: float) -> ScenarioConfig:
        """Same grid with every spot move (scan ranges and tails) multiplied by ``factor``."""
        tails = tuple(max(m * factor, -0.99) for m in self.tail_moves)
        update: dict[str, object] = {
            "price_range": min(self.price_range * factor, 0.99),
            "tail_moves": tails,
        }
        if self.price_range_down is not None:
            update["price_range_down"] = min(self.price_range_down * factor, 0.99)
        if self.price_range_up is not None:
            update["price_range_up"] = min(self.price_range_up * factor, 9.99)
        return self.model_copy(update=update)


class AddOnConfig(_Frozen):
    """Add-on and floor parameters (decimal fractions of USD notional unless stated).

    - ``min_delta_net`` / ``min_delta_hedged``: floor ``(u |net delta| + h hedged delta) S`` per
      underlying, hedged delta = (gross - |net|) / 2 (Paradex-style minimum delta charge).
    - ``perp_im`` / ``perp_mm``: ``|q| x notional`` contingency on perpetuals.
    - ``short_option_im`` / ``short_option_mm``: on naked shorts per strike (calls and puts at
      the same expiry and strike net; longs at other strikes do not cover), ``x S``.
    - ``short_option_minimum``: floor of the scenario part, ``x S`` per short option contract.
    - ``oracle_threshold`` / ``oracle_margin``: IM add-on ``(1 - conf) x oracle_margin x
      notional`` for instruments whose oracle confidence is below the threshold.
    - ``concentration``: ``k x notional x sqrt(|q| / liquidity)`` per position (IM; MM gets
      ``concentration_mm_share`` of it), with ``liquidity`` in contracts per instrument.
    """

    min_delta_net: float = Field(0.02, ge=0.0)
    min_delta_hedged: float = Field(0.01, ge=0.0)
    perp_im: float = Field(0.005, ge=0.0)
    perp_mm: float = Field(0.003, ge=0.0)
    short_option_im: float = Field(0.005, ge=0.0)
    short_option_mm: float = Field(0.003, ge=0.0)
    short_option_minimum: float = Field(0.0, ge=0.0)
    oracle_threshold: float = Field(0.55, ge=0.0, le=1.0)
    oracle_margin: float = Field(1.0, ge=0.0)
    concentration: float = Field(0.0, ge=0.0)
    concentration_mm_share: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _subadditive(self) -> AddOnConfig:
        # h <= 2u keeps the minimum delta charge sub-additive (cross <= isolated sum).
        if self.min_delta_hedged > 2.0 * self.min_delta_net:
            raise ValueError("min_delta_hedged must not exceed 2 x min_delta_net")
        return self


class OffsetConfig(_Frozen):
    """Cross-underlying offsets.

    ``mode``:

    - ``"none"``: the account requirement is the stand-alone sum ``S = sum_u L_u``.
    - ``"correlation"``: ``P = sqrt(x' C x)`` with ``x_u = L_u`` signed by the direction of the
      spot move of underlying u's worst scenario, ``C`` the correlation matrix.
    - ``"joint"``: ``P`` = VaR (or ES) at ``confidence`` of the account P&L over joint scenarios
      (rows of ``joint_moves``: one decimal move per underlying, e.g. filtered historical moves
      rescaled by current volatility), vols unchanged.

    The offset granted is capped (EMIR RTS 153/2013 Art. 27(4)): with ``cap_basis =
    "diversification"`` the requirement is ``S - cap x max(S - P, 0)``; with
    ``"standalone"`` it is ``max(P, (1 - cap) S)`` (never below ``P``), capped at ``S``.
    """

    mode: Literal["none", "correlation", "joint"] = "correlation"
    cap: float = Field(0.8, ge=0.0, le=1.0)
    cap_basis: Literal["diversification", "standalone"] = "diversification"
    underlyings: tuple[str, ...] = ()
    correlation: tuple[tuple[float, ...], ...] = ()
    joint_moves: tuple[tuple[float, ...], ...] = ()
    confidence: float = Field(0.99, gt=0.5, lt=1.0)
    measure: Literal["var", "es"] = "es"

    @model_validator(mode="after")
    def _shapes(self) -> OffsetConfig:
        n = len(self.underlyings)
        if self.mode == "correlation" and self.correlation:
            if len(self.correlation) != n or any(len(r) != n for r in self.correlation):
                raise ValueError("correlation must be a square matrix over `underlyings`")
            for i in range(n):
                if abs(self.correlation[i][i] - 1.0) > 1e-12:
                    raise ValueError("correlation diagonal must be 1")
                for j in range(n):
                    if abs(self.correlation[i][j] - self.correlation[j][i]) > 1e-12:
                        raise ValueError("correlation must be symmetric")
        if self.mode == "joint":
            if not self.joint_moves:
                raise ValueError("mode 'joint' needs joint_moves")
            if any(len(r) != n for r in self.joint_moves):
                raise ValueError("each joint_moves row needs one move per underlying")
        return self


class Methodology(_Frozen):
    """The engine's methodology: scenarios, loss factors, add-ons, offsets and rounding.

    ``scenarios`` maps an underlying to its grid; underlyings not listed use
    ``default_scenarios``. IM = ``im_loss_factor`` x scenario part + IM add-ons;
    MM = ``mm_loss_factor`` x scenario part + MM add-ons. With ``mm_scenarios`` (e.g. the
    narrower MM scan ranges of a parameter file) the MM scenario part is computed on those
    grids instead (underlyings not listed keep their IM grid; the smaller of the two MM figures
    is kept, so a finer MM grid never charges more than the IM grids), everything else
    unchanged.
    Requirements are rounded **up** and collateral **down** to ``settlement_precision`` USD
    (0 disables rounding).
    ``haircuts_mm`` values collateral (``price x (1 - haircut)``); ``haircuts_im_extra`` is an
    additional IM add-on on the collateral value. Coin collateral is shocked with its
    underlying in the scenarios when ``collateral_in_scenarios``.
    """

    scenarios: dict[str, ScenarioConfig] = Field(default_factory=dict)
    default_scenarios: ScenarioConfig = ScenarioConfig()
    mm_scenarios: dict[str, ScenarioConfig] = Field(default_factory=dict)
    im_loss_factor: float = Field(1.0, gt=0.0)
    mm_loss_factor: float = Field(0.8, gt=0.0)
    addons: AddOnConfig = AddOnConfig()
    offsets: OffsetConfig = OffsetConfig()
    haircuts_mm: dict[str, float] = Field(default_factory=dict)
    haircuts_im_extra: dict[str, float] = Field(default_factory=dict)
    collateral_in_scenarios: bool = True
    settlement_precision: float = Field(0.01, ge=0.0)

    @model_validator(mode="after")
    def _factors(self) -> Methodology:
        if self.mm_loss_factor > self.im_loss_factor:
            raise ValueError("mm_loss_factor must not exceed im_loss_factor")
        for name, table in (
            ("haircuts_mm", self.haircuts_mm),
            ("haircuts_im_extra", self.haircuts_im_extra),
        ):
            for asset, h in table.items():
                if not 0.0 <= h < 1.0:
                    raise ValueError(f"{name}[{asset!r}] must lie in [0, 1)")
        return self

    def scenario_config(self, underlying: str) -> ScenarioConfig:
        """The scenario grid used for ``underlying``."""
        return self.scenarios.get(underlying, self.default_scenarios)

    def with_shock_scale(self, factor: float) -> Methodology:
        """Copy with every spot move (scan ranges and tails) multiplied by ``factor``."""
        scaled = {u: c.scaled(factor) for u, c in self.scenarios.items()}
        mm_scaled = {u: c.scaled(factor) for u, c in self.mm_scenarios.items()}
        return self.model_copy(
            update={
                "scenarios": scaled,
                "default_scenarios": self.default_scenarios.scaled(factor),
                "mm_scenarios": mm_scaled,
            }
        )

    def im_view(self) -> Methodology:
        """This methodology without separate MM grids (MM from the IM scenario part)."""
        return self.model_copy(update={"mm_scenarios": {}}) if self.mm_scenarios else self

    def mm_view(self) -> Methodology | None:
        """The methodology whose scenario part is the MM one (``None`` without MM grids)."""
        if not self.mm_scenarios:
            return None
        grids = {**self.scenarios, **self.mm_scenarios}
        return self.model_copy(update={"scenarios": grids, "mm_scenarios": {}})
