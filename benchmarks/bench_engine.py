"""Engine benchmark: 1,000,000 accounts over BTC, ETH and SOL chains (~800 instruments).

Underlying prices are the real last hourly closes of 2024 (Binance spot, from the shared data
folder) and ATM vols the last DVOL closes (SOL: ETH's DVOL scaled by the ratio of 30-day
realized vols); the smile shape and every position are synthetic. Prints wall time and peak
memory of :func:`margin.engine.compute_margin`, the speed-up against a straightforward
per-account Python loop over the same methodology (measured on a subset and extrapolated),
and the median what-if latency.
"""

from __future__ import annotations

import functools
import gc
import os
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from margin.book import Book, MarketSnapshot
from margin.engine import MarginContext, compute_margin, prepare, round_up
from margin.instruments import InstrumentKind, InstrumentTable
from margin.methodology import Methodology
from margin.pricing import black76_price

SHARED_DATA = (
    Path(os.environ.get("XMARGIN_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    / "data"
)
UNDERLYINGS = ("BTC", "ETH", "SOL")
# fallbacks used only when the shared data folder is absent (last 2024 closes)
FALLBACK_INDEX = {"BTC": 93576.0, "ETH": 3337.78, "SOL": 189.31}
FALLBACK_VOL = {"BTC": 0.60, "ETH": 0.70, "SOL": 0.85}
CHAIN = {  # expiries (days) and strikes per expiry
    "BTC": ((2, 7, 14, 28, 56, 91, 182, 364), 20),
    "ETH": ((2, 7, 14, 28, 56, 91, 182, 364), 16),
    "SOL": ((7, 14, 28, 56, 91, 182), 15),
}


def _last_close(path: Path) -> float:
    return float(pd.read_csv(path).iloc[-1]["close"])


@functools.lru_cache(maxsize=1)
def market_inputs() -> tuple[dict[str, float], dict[str, float], str]:
    """Index (last close) and ATM vol per underlying from the shared data, with the source."""
    spot_dir = SHARED_DATA / "binance_spot_1h"
    if not spot_dir.is_dir():
        return dict(FALLBACK_INDEX), dict(FALLBACK_VOL), "built-in last closes (no data folder)"
    index, rv = {}, {}
    for u in UNDERLYINGS:
        frame = pd.read_csv(spot_dir / f"{u}USDT_1h.csv.gz")
        index[u] = float(frame["close"].iloc[-1])
        r = np.diff(np.log(frame["close"].to_numpy()[-24 * 30 :]))
        rv[u] = float(np.sqrt((r**2).sum() * 365 / 30))
    vol = {
        u: _last_close(SHARED_DATA / "deribit_dvol_1d" / f"{u}_DVOL_1d.csv.gz") / 100.0
        for u in ("BTC", "ETH")
    }
    vol["SOL"] = vol["ETH"] * rv["SOL"] / rv["ETH"]
    return index, vol, "Binance spot last close 2024-12-31 23:00 UTC, Deribit DVOL 2024-12-31"


def synthetic_instruments(
    index: dict[str, float], atm: dict[str, float]
) -> tuple[InstrumentTable, MarketSnapshot]:
    """Perps (linear and inverse), futures and option chains for BTC, ETH, SOL."""
    rows: list[dict[str, object]] = []
    for u in UNDERLYINGS:
        s = index[u]
        rows.append({"id": f"{u}-SPOT", "kind": InstrumentKind.SPOT, "u": u, "size": 1.0})
        rows.append({"id": f"{u}-PERP", "kind": InstrumentKind.LINEAR_PERP, "u": u, "size": 1.0})
        rows.append(
            {"id": f"{u}-INV-PERP", "kind": InstrumentKind.INVERSE_PERP, "u": u, "size": 10.0}
        )
        expiries, n_strikes = CHAIN[u]
        for d in expiries[2:]:
            rows.append(
                {
                    "id": f"{u}-FUT-{d}",
                    "kind": InstrumentKind.LINEAR_FUTURE,
                    "u": u,
                    "size": 1.0,
                    "t": d / 365,
                }
            )
        for d in expiries[3:5]:
            rows.append(
                {
                    "id": f"{u}-INV-FUT-{d}",
                    "kind": InstrumentKind.INVERSE_FUTURE,
                    "u": u,
                    "size": 10.0,
                    "t": d / 365,
                }
            )
        for d in expiries:
            t = d / 365
            width = atm[u] * np.sqrt(t) * 2.5
            for k in np.exp(np.linspace(-width, width, n_strikes)):
                strike = float(np.round(s * k, -int(np.floor(np.log10(s))) + 3))
                for cp in ("C", "P"):
                    rows.append(
                        {
                            "id": f"{u}-{d}D-{strike:g}-{cp}",
                            "kind": InstrumentKind.OPTION,
                            "u": u,
                            "size": 1.0,
                            "t": t,
                            "k": strike,
                            "call": cp == "C",
                        }
                    )
    frame = pd.DataFrame(rows).drop_duplicates("id").reset_index(drop=True)
    n = len(frame)
    und = frame["u"].map({u: i for i, u in enumerate(UNDERLYINGS)}).to_numpy(np.intp)
    kind = frame["kind"].to_numpy(np.intp)
    t = frame.get("t", pd.Series(np.nan, index=frame.index)).to_numpy(np.float64)
    strike = frame.get("k", pd.Series(np.nan, index=frame.index)).to_numpy(np.float64)
    is_call = frame.get("call", pd.Series(False, index=frame.index)).fillna(False).to_numpy(bool)
    table = InstrumentTable(
        ids=frame["id"].to_numpy(object),
        kind=kind,
        underlying=und,
        underlyings=UNDERLYINGS,
        strike=strike,
        expiry_years=t,
        is_call=is_call,
        coin_settled=np.isin(kind, (InstrumentKind.INVERSE_PERP, InstrumentKind.INVERSE_FUTURE)),
        contract_size=frame["size"].to_numpy(np.float64),
    )
    idx = np.array([index[u] for u in UNDERLYINGS])
    rate = np.full(3, 0.04)
    spot = idx[und]
    forward = np.where(np.isfinite(t), spot * np.exp(0.04 * np.nan_to_num(t)), spot)
    logm = np.log(strike / forward)
    atm_inst = np.array([atm[u] for u in UNDERLYINGS])[und]
    # synthetic smile: skewed parabola in log-moneyness scaled by total vol
    z = np.nan_to_num(logm / (atm_inst * np.sqrt(np.nan_to_num(t, nan=1.0))))
    vol = np.where(kind == InstrumentKind.OPTION, atm_inst * (1 + 0.04 * z**2 - 0.03 * z), 0.0)
    mark = np.where(
        kind == InstrumentKind.OPTION,
        black76_price(
            forward, np.nan_to_num(strike, nan=1.0), np.nan_to_num(t), vol, 0.04, is_call
        ),
        forward,
    )
    market = MarketSnapshot(
        underlyings=UNDERLYINGS,
        index=idx,
        rate=rate,
        underlying_confidence=np.ones(3),
        mark=mark,
        forward=forward,
        vol=vol,
        confidence=np.ones(n),
        liquidity=np.where(kind == InstrumentKind.OPTION, 5_000.0, 200_000.0)
        / np.maximum(spot / 1000, 0.1),
    )
    return table, market


def synthetic_book(n_accounts: int, seed: int = 7) -> Book:
    """A realistic mix: perp traders, basis trades, option spreads, hedged option books."""
    index, atm, _ = market_inputs()
    table, market = synthetic_instruments(dict(index), dict(atm))
    rng = np.random.default_rng(seed)
    und_weights = np.array([0.5, 0.35, 0.15])
    n_legs = 1 + rng.poisson(5.3, n_accounts)  # with spread partners: mean ~8 positions
    home = rng.choice(3, n_accounts, p=und_weights)
    acc = np.repeat(np.arange(n_accounts), n_legs)
    m = acc.size
    leg_und = np.where(rng.random(m) < 0.8, home[acc], rng.choice(3, m, p=und_weights))
    kind_draw = rng.random(m)
    inst_by = {}
    for code in range(3):
        mask = table.underlying == code
        inst_by[code] = {
            "delta1": np.flatnonzero(
                mask & (table.kind != InstrumentKind.OPTION) & (table.kind != InstrumentKind.SPOT)
            ),
            "opt": np.flatnonzero(mask & table.is_option),
        }
    inst = np.empty(m, dtype=np.intp)
    is_opt_leg = kind_draw < 0.6
    for code in range(3):
        sel = leg_und == code
        d1 = inst_by[code]["delta1"]
        op = inst_by[code]["opt"]
        a = sel & ~is_opt_leg
        inst[a] = d1[rng.integers(0, d1.size, a.sum())]
        b = sel & is_opt_leg
        # options: even legs pick an option, the next leg is its spread partner (next strike)
        inst[b] = op[rng.integers(0, op.size, b.sum())]
    size_scale = np.exp(rng.normal(0.0, 1.2, n_accounts))[acc]
    coins = np.array([1.0, 15.0, 300.0])[leg_und]
    qty = np.round(rng.choice([-1.0, 1.0], m) * size_scale * coins * rng.uniform(0.1, 2.0, m), 2)
    qty = np.where(table.is_inverse[inst], np.round(qty * market.index[leg_und] / 10.0), qty)
    # turn half of the option legs into vertical spreads / calendar-free hedges
    spread = is_opt_leg & (rng.random(m) < 0.5)
    partner = np.clip(inst[spread] + 2, 0, len(table) - 1)
    same = table.is_option[partner] & (table.underlying[partner] == leg_und[spread])
    acc_all = np.concatenate([acc, acc[spread][same]])
    inst_all = np.concatenate([inst, partner[same]])
    qty_all = np.concatenate([qty, -qty[spread][same]])
    qty_all = np.where(qty_all == 0, 1.0, qty_all)
    positions = sp.csr_matrix((qty_all, (acc_all, inst_all)), shape=(n_accounts, len(table)))
    positions.sum_duplicates()
    positions.eliminate_zeros()
    positions.sort_indices()
    assets = ("BTC", "ETH", "USDC")
    coin_acc = rng.random(n_accounts) < 0.3
    coll_asset = np.where(coin_acc, np.minimum(home, 1), 2)
    unit_notional = np.where(
        table.is_inverse, table.contract_size, table.contract_size * market.index[table.underlying]
    )
    notional = np.abs(positions) @ unit_notional
    amount_usd = 0.4 * notional * rng.uniform(0.3, 3.0, n_accounts) + 100.0
    price = np.array([market.index[0], market.index[1], 1.0])
    amount = np.round(amount_usd / price[coll_asset], 6)
    collateral = sp.csr_matrix((amount, (np.arange(n_accounts), coll_asset)), shape=(n_accounts, 3))
    accounts = np.char.add("acct-", np.arange(n_accounts).astype(str)).astype(object)
    return Book(table, accounts, positions, assets, collateral, market)


def benchmark_methodology() -> Methodology:
    """Default grid (9 prices x 3 vols + 8 tails = 35 scenarios per underlying), correlations."""
    return Methodology(
        offsets={
            "mode": "correlation",
            "underlyings": UNDERLYINGS,
            "correlation": ((1.0, 0.8, 0.7), (0.8, 1.0, 0.75), (0.7, 0.75, 1.0)),
        },
        addons={"concentration": 0.05},
    )


def loop_margin(ctx: MarginContext, book: Book, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The same methodology written as a plain per-account Python loop (reference and baseline).

    Covers the benchmark methodology's rules (correlation offsets, min delta, perp, naked shorts,
    oracle, concentration, collateral add-on); returns rounded ``im`` and ``mm``.
    """
    m = ctx.methodology
    cfg = m.addons
    risk, add = ctx.risk, ctx.addons
    und_of_inst = book.instruments.underlying
    asset_und = book.asset_underlying()
    pos_in_block = {}
    for u, cols in enumerate(risk.inst_of):
        for j, c in enumerate(cols):
            pos_in_block[int(c)] = (u, j)
    asset_in_block = {}
    for u, cols in enumerate(risk.asset_of):
        for j, c in enumerate(cols):
            asset_in_block[int(c)] = (u, j)
    group_of = {}
    sg = add.short_group.tocoo()
    for i, g, w in zip(sg.row, sg.col, sg.data, strict=True):
        group_of[int(i)] = (int(g), float(w))
    n_und = len(ctx.underlyings)
    im_out, mm_out = [], []
    P, C = book.positions, book.collateral
    for r in rows:
        lo, hi = P.indptr[r], P.indptr[r + 1]
        insts, qtys = P.indices[lo:hi], P.data[lo:hi]
        clo, chi = C.indptr[r], C.indptr[r + 1]
        assets, amounts = C.indices[clo:chi], C.data[clo:chi]
        pnl = [np.zeros(len(s)) for s in risk.sets]
        net = np.zeros(n_und)
        gross = np.zeros(n_und)
        perp_im = perp_mm = oracle = conc = som = extra = 0.0
        groups: dict[int, float] = {}
        for i, q in zip(insts, qtys, strict=True):
            u, j = pos_in_block[int(i)]
            pnl[u] += q * risk.risk_inst_scen[u][j]
            d = q * risk.delta_inst[i]
            net[u] += d
            gross[u] += abs(d)
            perp_im += abs(q) * add.perp_im[i]
            perp_mm += abs(q) * add.perp_mm[i]
            oracle += abs(q) * add.oracle_inst[i]
            conc += abs(q) ** 1.5 * add.concentration_unit[i]
            som += max(-q, 0.0) * add.som_unit[i]
            if int(i) in group_of:
                g, w = group_of[int(i)]
                groups[g] = groups.get(g, 0.0) + q * w
        for a, amt in zip(assets, amounts, strict=True):
            if int(a) in asset_in_block:
                u, j = asset_in_block[int(a)]
                pnl[u] += amt * risk.risk_asset_scen[u][j]
                net[u] += amt * risk.delta_asset[a]
                gross[u] += abs(amt * risk.delta_asset[a])
            oracle += abs(amt) * add.oracle_asset[a]
            extra += max(amt, 0.0) * add.collateral_im_extra[a]
        loss = np.array([max(-p.min(), 0.0) for p in pnl])
        sign = np.array(
            [-np.sign(s.spot_moves[int(np.argmin(p))]) for s, p in zip(risk.sets, pnl, strict=True)]
        )
        standalone = loss.sum()
        listed = ctx.offset_listed
        x = sign * loss
        quad = 0.0
        for a_ in range(n_und):
            for b_ in range(n_und):
                if listed[a_] and listed[b_]:
                    quad += loss[a_] ** 2 if a_ == b_ else ctx.correlation[a_, b_] * x[a_] * x[b_]
        portfolio = np.sqrt(max(quad, 0.0)) + loss[~listed].sum()
        cross = min(standalone - m.offsets.cap * max(standalone - portfolio, 0.0), standalone)
        if not listed.any():
            cross = standalone
        delta_floor = sum(
            (
                cfg.min_delta_net * abs(net[u])
                + cfg.min_delta_hedged * max(gross[u] - abs(net[u]), 0) / 2
            )
            * add.index[u]
            for u in range(n_und)
        )
        scen = max(cross, delta_floor, som)
        naked_im = sum(
            max(-v, 0.0) * add.group_index[g] * cfg.short_option_im for g, v in groups.items()
        )
        naked_mm = sum(
            max(-v, 0.0) * add.group_index[g] * cfg.short_option_mm for g, v in groups.items()
        )
        im_out.append(m.im_loss_factor * scen + perp_im + naked_im + oracle + conc + extra)
        mm_out.append(
            m.mm_loss_factor * scen + perp_mm + naked_mm + cfg.concentration_mm_share * conc
        )
    prec = m.settlement_precision
    del und_of_inst, asset_und
    return {"im": round_up(np.array(im_out), prec), "mm": round_up(np.array(mm_out), prec)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(n_accounts: int = 1_000_000, loop_subset: int = 2_000) -> None:
    """Build the synthetic book, time the engine, the loop baseline and what-if; print."""
    from margin.engine import DEFAULT_CHUNK
    from margin.whatif import WhatIf

    _, _, source = market_inputs()
    t0 = time.perf_counter()
    book = synthetic_book(n_accounts)
    t_build = time.perf_counter() - t0
    methodology = benchmark_methodology()
    n_scen = [len(s) for s in prepare(book.select_accounts(slice(0, 1)), methodology).risk.sets]
    print(f"market inputs: {source}")
    print(
        f"book: {book.n_accounts:,} accounts, {book.positions.nnz:,} positions "
        f"(mean {book.positions.nnz / book.n_accounts:.2f}), {len(book.instruments)} instruments, "
        f"scenarios per underlying {dict(zip(UNDERLYINGS, n_scen, strict=True))}; "
        f"built in {t_build:.1f} s"
    )
    t0 = time.perf_counter()
    cold = compute_margin(book, methodology)  # first call also splits the positions once
    t_cold = time.perf_counter() - t0
    del cold
    gc.collect()
    times, cpu = [], []
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        result = compute_margin(book, methodology)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    median = float(np.median(times))
    tracemalloc.start()
    compute_margin(book, methodology)
    _, peak_traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    load = os.getloadavg()[0]
    print(
        f"compute_margin: {median:.3f} s median wall of 5 (min {min(times):.3f} s), "
        f"{float(np.median(cpu)):.3f} s CPU over 2 threads (chunks of {DEFAULT_CHUNK:,} accounts, "
        f"float64 scan); first call incl. position layout {t_cold:.3f} s; load average "
        f"{load:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"peak memory: {peak_traced / 2**20:.0f} MB allocated during compute_margin "
        f"(tracemalloc); process peak RSS {_peak_rss_mb():.0f} MB (book and generator included)"
    )
    ctx = prepare(book, methodology)
    rows = np.arange(loop_subset)
    t0, c0 = time.perf_counter(), time.process_time()
    loop = loop_margin(ctx, book, rows)
    t_loop = time.perf_counter() - t0
    c_loop = time.process_time() - c0
    per_acct = t_loop / loop_subset
    loop_total = per_acct * n_accounts
    loop_cpu_total = c_loop / loop_subset * n_accounts
    rel = np.abs(loop["im"] - result.im[rows]) / np.maximum(result.im[rows], 1.0)
    print(
        f"per-account Python loop: {per_acct * 1e6:.0f} us/account on {loop_subset:,} accounts "
        f"-> {loop_total:.0f} s extrapolated; speed-up {loop_total / median:.0f}x wall, "
        f"{loop_cpu_total / float(np.median(cpu)):.0f}x CPU ({c_loop / loop_subset * 1e6:.0f} us "
        f"CPU/account); IM agree to {rel.max():.1e} relative (both scan in float64)"
    )
    ref = np.ones(10)
    c0 = time.thread_time()
    for _ in range(20_000):
        np.add(ref, ref)  # calibration of the machine's current speed
    add_us = (time.thread_time() - c0) / 20_000 * 1e6
    print(f"calibration: numpy add of two 10-element arrays {add_us:.2f} us CPU")
    t0 = time.perf_counter()
    whatif = WhatIf(book, methodology, context=ctx)
    t_setup = time.perf_counter() - t0
    trade_inst = np.array([1, 40])
    trade_qty = np.array([0.5, -1.0])
    lat, lat_cpu = [], []
    for i in range(5_000):
        acct = (i * 7919) % n_accounts  # a different account each time: nothing cached
        t0, c0 = time.perf_counter(), time.thread_time()
        whatif.margin_after(acct, trade_inst, trade_qty)
        lat.append(time.perf_counter() - t0)
        lat_cpu.append(time.thread_time() - c0)
    lat_us = np.array(lat[500:]) * 1e6
    cpu_us = np.array(lat_cpu[500:]) * 1e6
    sample = np.arange(0, n_accounts, max(n_accounts // 500, 1))
    same = all(
        (q.im, q.mm, q.worst_scenario) == (result.im[r], result.mm[r], result.worst_scenario[r])
        for r, q in zip(sample, whatif.margins_after(sample.tolist(), [], []), strict=True)
    )
    print(
        f"what-if (one account, one 2-leg trade, 4,500 accounts): median {np.median(lat_us):.1f} "
        f"us wall (p90 {np.percentile(lat_us, 90):.1f}, p99 {np.percentile(lat_us, 99):.1f} us), "
        f"median {np.median(cpu_us):.1f} us CPU = {np.median(cpu_us) / add_us:.0f} calibration "
        f"ops; setup (per-account table) {t_setup:.2f} s; without a trade equals compute_margin "
        f"on {sample.size} sampled accounts: {'yes' if same else 'NO'}"
    )
    n_liq = int(result.liquidatable.sum())
    print(
        f"accounts under MM: {n_liq:,}; IM total {result.im.sum():,.0f} USD vs isolated "
        f"{result.isolated_im.sum():,.0f} USD"
    )


if __name__ == "__main__":
    run()
