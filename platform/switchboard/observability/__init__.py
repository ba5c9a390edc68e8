"""Observability: Prometheus metrics, JSON logs with a request id, task and delivery logs.

See README "Observability".
"""
