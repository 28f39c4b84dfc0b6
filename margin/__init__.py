"""Margin: pricing, the cross-margin engine, profiles, calibration, backtests, parameter files."""
