"""Measurement: gates, calibration, benchmark statistics, roofline. Pure; no GitHub, no ledger."""
