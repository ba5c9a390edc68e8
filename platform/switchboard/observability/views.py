"""`/metrics`: Prometheus metrics, for the scrapers the operator allows.

Access (see README "Observability"): with `SWITCHBOARD_METRICS_TOKEN` set, a request
must carry `Authorization: Bearer <token>` (401 otherwise); with
`SWITCHBOARD_METRICS_ALLOWED_NETWORKS` set, it must come from one of them (403
otherwise); with both set, both apply; with neither, metrics are off (403). Closed by
default: the numbers name tenants and their traffic.

`?scope=` picks what is served: `process` (this web process: HTTP metrics from
django-prometheus, Python runtime), `platform` (the installation: messages, tokens,
queues, MAU, pool, computed at scrape time) or `all` (the default). With several web
replicas, scrape each replica for `process` and one of them (through the load
balancer) for `platform`, or every platform series is counted once per replica.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterator
from functools import lru_cache

import prometheus_client
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from switchboard.observability.collector import PlatformCollector

SCOPES = ("all", "process", "platform")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _ProcessMetrics(Collector):
    """This process's own metrics, or with `PROMETHEUS_MULTIPROC_DIR` set (several
    server processes on one host), those of every process sharing that directory."""

    def collect(self) -> Iterator[prometheus_client.Metric]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            yield from multiprocess.MultiProcessCollector(None).collect()
        else:
            yield from prometheus_client.REGISTRY.collect()


@lru_cache(maxsize=8)
def parse_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    """Networks from settings; raises ValueError on a bad one (a system check reports it
    at startup)."""
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _client_allowed(request: HttpRequest, networks: tuple[Network, ...]) -> bool:
    # The TCP peer, never X-Forwarded-For: anyone can write that header.
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in networks)


def _refusal(request: HttpRequest) -> JsonResponse | None:
    token = settings.SWITCHBOARD_METRICS_TOKEN
    networks = parse_networks(tuple(settings.SWITCHBOARD_METRICS_ALLOWED_NETWORKS))
    if not token and not networks:
        return _error(
            403,
            "metrics_disabled",
            "metrics are off: set SWITCHBOARD_METRICS_TOKEN and/or "
            "SWITCHBOARD_METRICS_ALLOWED_NETWORKS",
        )
    if networks and not _client_allowed(request, networks):
        return _error(403, "forbidden", "this address may not read metrics")
    if token:
        given = _bearer(request)
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            response = _error(401, "unauthorized", "send Authorization: Bearer <metrics token>")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return None


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = _error(405, "method_not_allowed", "use GET")
        response["Allow"] = "GET, HEAD"
        return response
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    scope = request.GET.get("scope", "all")
    if scope not in SCOPES:
        return _error(400, "invalid_scope", f"scope must be one of: {', '.join(SCOPES)}")
    # A registry per scrape: the collectors are only asked for samples, never described
    # up front (which would run the platform queries twice).
    registry = CollectorRegistry(auto_describe=False)
    if scope in ("all", "process"):
        registry.register(_ProcessMetrics())
    if scope in ("all", "platform"):
        registry.register(PlatformCollector())
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry), content_type=content_type)
