"""Market-history benchmark: sync, then load six symbols 2018-2024 and build the panel.

Prints the sync time, then the median of 5 wall times of ``load_market_history`` (all six
symbols, every source, 2018-2024) plus ``build_daily_panel``, with the Arrow cache warm
(the normal case after ``xmargin data sync``) and, for reference, cold (CSV parsing and
validation of every file).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "DOGE", "BNB")
REPEATS = 5
TARGET_S = 3.0


def _load_and_panel(data_dir: Path, use_cache: bool) -> tuple[float, int, int]:
    from features import build_daily_panel, load_market_history

    start = time.perf_counter()
    history = load_market_history(data_dir, SYMBOLS, "2018", "2024", use_cache=use_cache)
    panel = build_daily_panel(history)
    elapsed = time.perf_counter() - start
    hours = sum(len(f) for f in history.spot.values())
    return elapsed, hours, len(panel)


def run() -> None:
    """Print sync time and median load + panel times (target < 3 s on 2 cores)."""
    from features.sync import default_mirror, project_root, sync_from_mirror

    data_dir = project_root() / "data"
    mirror = default_mirror()
    if mirror is None:
        print("data: no mirror (../shared/data) found; benchmark skipped")
        return
    start = time.perf_counter()
    result = sync_from_mirror(mirror, data_dir)
    print(
        f"sync {mirror} -> {data_dir}: {time.perf_counter() - start:.2f} s "
        f"({len(result.copied)} copied, {len(result.unchanged)} up to date)"
    )
    _load_and_panel(data_dir, True)  # make sure every cache entry exists
    for label, use_cache in (("arrow cache", True), ("cold, no cache", False)):
        times = []
        for _ in range(REPEATS):
            elapsed, hours, rows = _load_and_panel(data_dir, use_cache)
            times.append(elapsed)
        median = statistics.median(times)
        verdict = "" if not use_cache else (" OK" if median < TARGET_S else " SLOW")
        print(
            f"load 6 symbols 2018-2024 ({hours:,} spot hours, all sources) + daily panel "
            f"({rows:,} rows), {label}: median of {REPEATS} = {median:.3f} s "
            f"(min {min(times):.3f}, max {max(times):.3f}; target < {TARGET_S:.0f} s){verdict}"
        )
