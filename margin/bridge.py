"""From a published parameter set to the engine's methodology (no calibration, a translation).

Per underlying of the book, :func:`methodology_from_parameters` maps the file's
:class:`~margin.parameters.RiskParameters` onto a :class:`~margin.methodology.ScenarioConfig`:

* **asymmetric scan grid** — down-moves to ``-scan_im.long`` (the fall a long must survive),
  up-moves to ``+scan_im.short`` (the rise a short must survive);
* **tails** — the file's tail moves; each weight is capped by the linear-equivalent rule *of its
  side* (``weight <= scan_im.long / |move|`` for falls, ``scan_im.short / move`` for rises), so
  a linear position is charged exactly its side's IM scan range and only convexity pays for the
  tails (the file's weights use the larger range of the two sides);
* **vol shocks** — up / down, short- and long-DTE powers, DTE floor and minimum shocked vol;
* **collateral** — MM haircut values coin collateral, the IM excess is an IM add-on;
* **offsets** — the stressed correlations with the file's offset cap (EMIR Art. 27), when the
  book holds more than one underlying and the file carries correlations;
* **MM** — its own grids (``Methodology.mm_scenarios``) from the MM scan ranges per side, with
  the same vol shocks and tail moves (weights capped by the MM ranges), loss factors 1; the
  engine scans the book a second time on them. ``mm="loss_factor"`` instead scales the IM
  scenario part by the largest ``scan_mm / scan_im`` ratio of the book's underlyings and sides
  (one scan; exact for that underlying and side, conservative for single-underlying linear
  positions elsewhere, not a bound in general since offsets are non-linear).

* **perp IMF / MMF** — the file's perp fraction is the stand-alone requirement of a perp
  position; the scan grid already charges a perp the range of the side it loses on, so only
  the part of IMF above the larger IM scan range, ``max(imf - max(scan_im), 0)``, is new
  information (MMF likewise against the MM ranges). It is added to the engine's perp
  contingency (``AddOnConfig.perp_im`` / ``perp_mm``, a fraction of perp notional). The engine's
  contingency is one fraction for every underlying, so with several underlyings the largest
  excess of the book's underlyings applies to all their perps (conservative; exact with one
  underlying, or when only one has an excess). A calibrated file has IMF = the larger scan
  range by construction (excess 0), so it leaves the engine's add-ons unchanged.

The file's square-root size add-on is not mapped: the engine's concentration add-on is its
portfolio analogue and needs each instrument's liquidity in the book's market snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from margin.methodology import AddOnConfig, Methodology, OffsetConfig, ScenarioConfig
from margin.parameters import ParameterSet, RiskParameters, TailMove, VolShock

__all__ = [
    "MissingParametersError",
    "methodology_from_parameters",
    "perp_addons",
    "scan_grid",
    "scenario_config_from",
]

#: Largest down-move the engine's grid accepts (prices stay positive).
MAX_DOWN = 0.99
MAX_UP = 9.99
_NO_EXCESS = 1e-12


class MissingParametersError(ValueError):
    """The book holds an underlying the parameter set does not cover."""


def scan_grid(
    scan_long: float,
    scan_short: float,
    vol_shock: VolShock,
    tails: Sequence[TailMove],
    n_price_steps: int = 4,
) -> ScenarioConfig:
    """An asymmetric scenario grid from scan ranges per side (IM or MM), vol shocks and tails.

    Down-moves reach ``-scan_long``, up-moves ``+scan_short`` (decimal fractions of price);
    each tail weight is capped at ``side range / |move|`` (linear-equivalent rule per side).
    """
    down = min(scan_long, MAX_DOWN)
    up = min(scan_short, MAX_UP)
    weights = tuple(min(t.weight, (down if t.move < 0 else up) / abs(t.move), 1.0) for t in tails)
    return ScenarioConfig(
        price_range=min(max(down, up), MAX_DOWN),
        price_range_down=down,
        price_range_up=up,
        n_price_steps=n_price_steps,
        vol_up=vol_shock.up,
        vol_down=vol_shock.down,
        short_term_power=vol_shock.power_short_dte,
        long_term_power=vol_shock.power_long_dte,
        dte_floor_days=vol_shock.dte_floor_days,
        min_vol=vol_shock.min_shocked_vol,
        tail_moves=tuple(t.move for t in tails),
        tail_weights=weights,
    )


def scenario_config_from(p: RiskParameters, n_price_steps: int = 4) -> ScenarioConfig:
    """The scenario grid of one underlying from its IM scan ranges, vol shocks and tails."""
    return scan_grid(p.scan_im.long, p.scan_im.short, p.vol_shock, p.tails, n_price_steps)


def perp_addons(params: Sequence[RiskParameters], addons: AddOnConfig) -> AddOnConfig:
    """The engine's add-ons with the perp contingency raised by the file's perp IMF / MMF.

    ``perp_im = addons.perp_im + max_u max(imf_u - max(scan_im_u), 0)`` and likewise
    ``perp_mm`` from MMF and the MM scan ranges (decimal fractions of perp notional), the
    maximum taken over ``params`` (the book's underlyings). An excess below 1e-12 counts as
    none (the file stores 12 significant digits).
    """
    excess_im = max(
        (p.perp.imf - max(p.scan_im.long, p.scan_im.short) for p in params), default=0.0
    )
    excess_mm = max(
        (p.perp.mmf - max(p.scan_mm.long, p.scan_mm.short) for p in params), default=0.0
    )
    excess_im = excess_im if excess_im > _NO_EXCESS else 0.0
    excess_mm = excess_mm if excess_mm > _NO_EXCESS else 0.0
    if excess_im == 0.0 and excess_mm == 0.0:
        return addons
    return addons.model_copy(
        update={"perp_im": addons.perp_im + excess_im, "perp_mm": addons.perp_mm + excess_mm}
    )


def methodology_from_parameters(
    params: ParameterSet,
    underlyings: Sequence[str],
    *,
    addons: AddOnConfig | None = None,
    n_price_steps: int = 4,
    settlement_precision: float = 0.01,
    mm: Literal["scan", "loss_factor"] = "scan",
) -> Methodology:
    """The engine methodology a parameter set prescribes for a book's underlyings.

    Parameters
    ----------
    params : ParameterSet
        A verified parameter file's content (``margin.params.load(path, verify=True)``).
    underlyings : sequence of str
        The book's underlyings (``book.market.underlyings``), e.g. ``("BTC", "ETH")``.
    addons : AddOnConfig, optional
        Engine add-ons (minimum delta charge, perp and short-option contingencies, oracle and
        concentration add-ons); default ``AddOnConfig()``. The perp contingency is raised by
        the file's perp IMF / MMF above the scan ranges (:func:`perp_addons`).
    n_price_steps : int
        Price points per side of the scan grid.
    settlement_precision : float
        USD precision requirements are rounded up to and collateral down to.
    mm : {"scan", "loss_factor"}
        MM from its own scan grids (two scans; never above the MM the IM grids give) or from
        the IM scenario part times the largest MM/IM scan-range ratio (one scan).

    Returns
    -------
    Methodology
        IM on the IM scan grids with loss factor 1; MM as chosen by ``mm``.

    Raises
    ------
    MissingParametersError
        (a ``ValueError``) when an underlying of the book has no parameters in the file.
    """
    missing = [u for u in underlyings if u not in params.underlyings]
    if missing:
        raise MissingParametersError(
            f"the parameter set as of {params.as_of} has no parameters for underlying "
            f"{missing[0]!r} of the book (it covers {', '.join(sorted(params.underlyings))})"
        )
    chosen = [params.underlyings[u] for u in underlyings]
    ratios = [
        getattr(p.scan_mm, side) / getattr(p.scan_im, side)
        for p in chosen
        for side in ("long", "short")
    ]
    offsets = OffsetConfig(mode="none")
    if params.offsets is not None and len(underlyings) > 1:
        matrix = params.offsets.stressed
        order = [matrix.symbols.index(u) for u in underlyings]
        offsets = OffsetConfig(
            mode="correlation",
            cap=params.offsets.offset_cap,
            underlyings=tuple(underlyings),
            correlation=tuple(tuple(matrix.values[i][j] for j in order) for i in order),
        )
    mm_grids = {}
    if mm == "scan":
        mm_grids = {
            p.underlying: scan_grid(
                p.scan_mm.long, p.scan_mm.short, p.vol_shock, p.tails, n_price_steps
            )
            for p in chosen
        }
    return Methodology(
        scenarios={p.underlying: scenario_config_from(p, n_price_steps) for p in chosen},
        mm_scenarios=mm_grids,
        im_loss_factor=1.0,
        mm_loss_factor=1.0 if mm == "scan" else min(max(ratios, default=1.0), 1.0),
        addons=perp_addons(chosen, addons if addons is not None else AddOnConfig()),
        offsets=offsets,
        haircuts_mm={p.underlying: p.haircut.mm for p in chosen},
        haircuts_im_extra={p.underlying: p.haircut.im - p.haircut.mm for p in chosen},
        settlement_precision=settlement_precision,
    )
