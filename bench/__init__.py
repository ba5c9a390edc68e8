"""Benchmarks for the inference pool: scripts run with ``python -m bench.<name>``."""
