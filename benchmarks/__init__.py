"""Benchmarks run by ``make bench``: one ``bench_<area>.py`` module per area."""
