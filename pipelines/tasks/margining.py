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


@task(name="methodology-from-parameters", cache_policy=NO_CACHE)
def methodology_from_parameters(params: ParameterSet, book: Book) -> Methodology:
    """The book's methodology, from :func:`margin.bridge.methodology_from_parameters`."""
    from margin.bridge import methodology_from_parameters as bridge

    methodology = bridge(params, list(book.market.underlyings))
    get_run_logger().info(
        "Methodology from parameters as of %s for %s (IM and MM on their own scan grids)",
        params.as_of, ", ".join(book.market.underlyings),
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
