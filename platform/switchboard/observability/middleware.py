"""The web process's access log: one line per request, with its request id.

It sits just inside django-guid's middleware, so the id is set, and outside everything
else, so it sees the final status (an HTTPS redirect, a lockout) and the whole time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

logger = logging.getLogger("switchboard.access")

# Probes, scrapes and static files would drown the lines that matter: DEBUG for them.
_QUIET_PATHS = ("/healthz", "/readyz", "/metrics")


class AccessLogMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.enabled = settings.SWITCHBOARD_ACCESS_LOG
        self.static_prefix = "/" + settings.STATIC_URL.lstrip("/")
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        response = self.get_response(request)  # type: ignore[assignment]
        self._log(request, response, started)  # type: ignore[arg-type]
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = await self.get_response(request)  # type: ignore[misc]
        self._log(request, response, started)
        return response

    def _log(self, request: HttpRequest, response: HttpResponseBase, started: float) -> None:
        if not self.enabled:
            return
        path = request.path
        quiet = path.startswith(self.static_prefix) or path in _QUIET_PATHS
        level = logging.DEBUG if quiet else logging.INFO
        if not logger.isEnabledFor(level):
            return
        duration_ms = (time.perf_counter() - started) * 1000.0
        logger.log(
            level,
            '"%s %s" %d %.1fms',
            request.method,
            path,
            response.status_code,
            duration_ms,
            extra={
                "method": request.method,
                "path": path,
                "status": response.status_code,
                "duration_ms": round(duration_ms, 3),
                # The TCP peer: the proxy's address behind one (see README).
                "client": request.META.get("REMOTE_ADDR", ""),
            },
        )
