"""Tasks of ``compute-margins``: verified parameters, book, methodology, shards, plans."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.tasks.common import IO_BACKOFF, IO_RETRIES

if TYPE_CHECKING:
    from margin.book import Book
    from margin.methodology import Methodology
    from margin.parameters import ParameterSet
    from margin.result import MarginResult


@task(
    name="load-parameters",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def load_parameters(path: Path, public_key: Path | None) -> ParameterSet:
    """A verified parameter set (``margin.params.load`` with ``verify=True``)."""
    from margin.keys import load_public_key
    from margin.params import load

    key = None if public_key is None else load_public_key(public_key)
    params = load(path, verify=True, public_key=key)
    get_run_logger().info(
        "Parameters as of %s verified (%d underlyings)", params.as_of, len(params.underlyings)
    )
    return params


@task(name="load-book", cache_policy=NO_CACHE, retries=IO_RETRIES, retry_delay_seconds=IO_BACKOFF)
def load_book(folder: Path) -> Book:
    """The book of accounts (``margin.book.load_book``)."""
    from margin.book import load_book as load

    book = load(folder)
    get_run_logger().info("Book: %d accounts, %d positions", book.n_accounts, book.positions.nnz)
    return book


def methodology_for(params: ParameterSet, underlyings: Sequence[str]) -> Methodology:
    """The engine methodology a published parameter set prescribes for these underlyings.

    A field-by-field translation, no calibration: per underlying the scan grid spans the
    larger IM scan range of the two sides, vol shocks, DTE powers, floor, minimum shocked vol
    and tail moves/weights come from the file; MM is the IM scenario part scaled by the
    largest MM/IM scan-range ratio of the set (one loss factor per methodology); collateral
    haircuts (MM, and the IM excess as an IM add-on) and the stressed correlations with the
    file's offset cap give the cross-underlying offsets.

    Raises
    ------
    ValueError
        An underlying of the book has no parameters in the file.
    """
    from margin.methodology import Methodology, OffsetConfig, ScenarioConfig

    missing = [u for u in underlyings if u not in params.underlyings]
    if missing:
        raise ValueError(
            f"the parameter file (as of {params.as_of}) has no parameters for underlying "
            f"{missing[0]} of the book"
        )
    scenarios = {}
    ratios = []
    for name in underlyings:
        p = params.underlyings[name]
        im = max(p.scan_im.long, p.scan_im.short)
        ratios.append(max(p.scan_mm.long, p.scan_mm.short) / im)
        scenarios[name] = ScenarioConfig(
            price_range=min(im, 0.99),
            vol_up=p.vol_shock.up,
            vol_down=p.vol_shock.down,
            short_term_power=p.vol_shock.power_short_dte,
            long_term_power=p.vol_shock.power_long_dte,
            dte_floor_days=p.vol_shock.dte_floor_days,
            min_vol=p.vol_shock.min_shocked_vol,
            tail_moves=tuple(t.move for t in p.tails),
            tail_weights=tuple(t.weight for t in p.tails),
        )
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
    return Methodology(
        scenarios=scenarios,
        im_loss_factor=1.0,
        mm_loss_factor=min(max(ratios), 1.0),
        offsets=offsets,
        haircuts_mm={u: params.underlyings[u].haircut.mm for u in underlyings},
        haircuts_im_extra={
            u: params.underlyings[u].haircut.im - params.underlyings[u].haircut.mm
            for u in underlyings
        },
    )


@task(name="methodology-from-parameters", cache_policy=NO_CACHE)
def methodology_from_parameters(params: ParameterSet, book: Book) -> Methodology:
    """The methodology for the book's underlyings (:func:`methodology_for`)."""
    methodology = methodology_for(params, list(book.market.underlyings))
    get_run_logger().info(
        "Methodology from parameters as of %s for %s (MM loss factor %.3f)",
        params.as_of, ", ".join(book.market.underlyings), methodology.mm_loss_factor,
    )  # fmt: skip
    return methodology


@task(name="shard-book", cache_policy=NO_CACHE)
def shard_book(book: Book, shards: int) -> list[Book]:
    """Contiguous account shards (``Book.select_accounts``); one shard when ``shards`` is 1."""
    from pipelines.dask_runner import account_shards

    if shards <= 1:
        return [book]
    return [book.select_accounts(rows) for rows in account_shards(book.n_accounts, shards)]


@task(name="margin-shard", cache_policy=NO_CACHE)
def margin_shard(book: Book, methodology: Methodology) -> MarginResult:
    """Margin of one shard of accounts (``margin.engine.compute_margin``)."""
    from margin.engine import compute_margin

    return compute_margin(book, methodology, n_threads=1)


@task(name="stack-shards", cache_policy=NO_CACHE)
def stack_shards(parts: Sequence[MarginResult]) -> MarginResult:
    """The whole book's result from its shards, in account order (``MarginResult.concat``)."""
    from margin.result import MarginResult as Result

    return Result.concat(list(parts))


@task(name="liquidation-plans", cache_policy=NO_CACHE)
def liquidation_plans(
    book: Book, methodology: Methodology, result: MarginResult, params: ParameterSet
) -> pd.DataFrame:
    """Orders for every account under MM (``margin.liquidation.liquidation_plan``), with the
    square-root impact model on the file's one-day volatilities."""
    import math

    from margin.liquidation import liquidation_plan

    sigma = {
        u: params.underlyings[u].sigma / math.sqrt(params.horizon_days)
        for u in book.market.underlyings
    }
    plan = liquidation_plan(book, methodology, result, sigma_daily=sigma)
    get_run_logger().info("Liquidation plans: %d orders", len(plan))
    return plan


@task(
    name="write-margin-results",
    cache_policy=NO_CACHE,
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
)
def write_margin_results(result: MarginResult, plan: pd.DataFrame, out_file: Path) -> Path:
    """One row per account (CSV or Parquet by the suffix) and the liquidation orders next to
    it (``<stem>_liquidations.<suffix>``), each written atomically."""
    frame = result.to_frame().reset_index()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    orders = out_file.with_name(f"{out_file.stem}_liquidations{out_file.suffix}")
    for path, table in ((out_file, frame), (orders, plan)):
        tmp = path.with_name(f".{path.name}.tmp")
        if path.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False, float_format="%.10g", lineterminator="\n")
        tmp.replace(path)
    n_liq = int(result.liquidatable.sum())
    get_run_logger().info(
        "Margin of %d accounts written to %s; %d under maintenance margin, plans in %s",
        len(result), out_file, n_liq, orders.name,
    )  # fmt: skip
    return out_file
