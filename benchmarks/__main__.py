"""Run every ``benchmarks/bench_*.py`` module's ``run()`` and print its figures.

Usage: ``python -m benchmarks [AREA ...]`` (e.g. ``python -m benchmarks engine data``).
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

import numpy as np


def _machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import os

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, {platform.system()} {platform.release()}"
    )


def main(argv: list[str]) -> int:
    """Run the selected (default: all) benchmark modules."""
    here = Path(__file__).parent
    areas = argv or sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    print(f"machine: {_machine()}")
    for area in areas:
        module = importlib.import_module(f"benchmarks.bench_{area}")
        print(f"\n== {area} ==", flush=True)
        module.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
