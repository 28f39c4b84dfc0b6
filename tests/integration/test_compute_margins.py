"""``compute-margins``: a signed parameter file and a book folder → margin per account and
liquidation plans; Dask account shards give the same bytes as one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

BTC, ETH, VOL, T30 = 60_000.0, 3_000.0, 0.6, 30.0 / 365.0


def write_book(folder: Path, n_accounts: int = 240, seed: int = 11) -> Path:
    """A seeded book of perps, inverse perps and option strips on BTC and ETH, as CSV files."""
    from margin.pricing import black76_price

    rows: list[dict[str, object]] = [
        {"instrument": "BTC-PERP", "kind": "linear_perp", "underlying": "BTC"},
        {"instrument": "BTC-INV", "kind": "inverse_perp", "underlying": "BTC", "contract_size": 10},
        {"instrument": "ETH-PERP", "kind": "linear_perp", "underlying": "ETH"},
    ]
    for und, spot in (("BTC", BTC), ("ETH", ETH)):
        for k in (0.9, 1.0, 1.1):
            for cp in ("C", "P"):
                rows.append({
                    "instrument": f"{und}-{k}-{cp}", "kind": "option", "underlying": und,
                    "strike": spot * k, "expiry_years": T30, "option_type": cp,
                })  # fmt: skip
    inst = pd.DataFrame(rows)
    s = inst["underlying"].map({"BTC": BTC, "ETH": ETH}).to_numpy(float)
    is_opt = (inst["kind"] == "option").to_numpy()
    k = inst["strike"].fillna(1.0).to_numpy(float)
    t = inst["expiry_years"].fillna(0.0).to_numpy(float)
    marks = np.where(is_opt, black76_price(s, k, t, VOL, 0.0, (inst["option_type"] == "C")), s)
    market = pd.DataFrame({
        "instrument": inst["instrument"], "mark": marks, "forward": s,
        "vol": np.where(is_opt, VOL, np.nan), "confidence": 1.0,
    })  # fmt: skip
    underlyings = pd.DataFrame({"underlying": ["BTC", "ETH"], "index": [BTC, ETH], "rate": 0.0})
    rng = np.random.default_rng(seed)
    legs = rng.integers(1, 5, n_accounts)
    account = np.repeat([f"acct-{i:04d}" for i in range(n_accounts)], legs)
    pick = rng.integers(0, len(inst), account.size)
    positions = pd.DataFrame({
        "account": account, "instrument": inst["instrument"].to_numpy()[pick],
        "quantity": np.round(rng.normal(0.0, 2.0, account.size), 3) + 0.001,
    }).drop_duplicates(["account", "instrument"])  # fmt: skip
    collateral = pd.DataFrame({
        "account": [f"acct-{i:04d}" for i in range(n_accounts)], "asset": "USDC",
        "amount": np.round(rng.uniform(1e3, 2e5, n_accounts), 2),
    })  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("instruments", inst), ("positions", positions),
                        ("collateral", collateral), ("market", market),
                        ("underlyings", underlyings)):  # fmt: skip
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def published(first_run: tuple[Path, dict[str, object]]) -> Path:
    out, _ = first_run
    return out / "params" / "latest"


def test_margins_and_plans_are_written(
    prefect_harness: Path, published: Path, tmp_path: Path
) -> None:
    from pipelines.flows import compute_margins

    book = write_book(tmp_path / "book")
    out = Path(compute_margins(str(published), str(book), str(tmp_path / "margins.csv")))
    frame = pd.read_csv(out)
    assert len(frame) == 240
    assert (frame["im"] >= frame["mm"]).all() and (frame["mm"] >= 0).all()
    assert {"equity", "margin_ratio", "liquidatable", "delta_BTC"} <= set(frame.columns)
    plans = tmp_path / "margins_liquidations.csv"
    assert plans.is_file()
    if frame["liquidatable"].any():
        assert len(pd.read_csv(plans)) > 0


def test_tampered_parameters_are_refused(
    prefect_harness: Path, published: Path, tmp_path: Path
) -> None:
    import shutil

    from margin.params import ParameterFileError
    from pipelines.flows import compute_margins

    copy = tmp_path / "params"
    shutil.copytree(published.resolve(), copy)
    text = (copy / "params.json").read_text()
    (copy / "params.json").write_text(text.replace('"sigma":', '"sigma": 0.5, "x":', 1))
    with pytest.raises(ParameterFileError):
        compute_margins(str(copy), str(write_book(tmp_path / "book")), str(tmp_path / "m.csv"))


def test_dask_shards_equal_one_process(
    prefect_harness: Path, published: Path, tmp_path: Path
) -> None:
    from distributed import LocalCluster

    from pipelines.dask_runner import task_runner
    from pipelines.flows import compute_margins

    book = write_book(tmp_path / "book")
    single = Path(compute_margins(str(published), str(book), str(tmp_path / "one.csv")))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:  # fmt: skip
        flow = compute_margins.with_options(task_runner=task_runner(cluster.scheduler_address))
        sharded = Path(flow(str(published), str(book), str(tmp_path / "dask.csv"), 4))
    assert sharded.read_bytes() == single.read_bytes()
