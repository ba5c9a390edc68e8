"""OpenAPI access tokens (PROTOCOLS.md §B.6), cached per app key until shortly before expiry."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from connectors.dingtalk.errors import (
    DingTalkDeliveryError,
    check_openapi_response,
    network_error,
)

TOKEN_PATH = "/v1.0/oauth2/accessToken"  # noqa: S105 (a URL path, not a secret)
# The official SDK refreshes 5 minutes early, so a token never expires mid-request.
REFRESH_MARGIN_S = 300.0


@dataclass(frozen=True)
class _Cached:
    token: str
    secret_digest: str
    refresh_at: float


class AccessTokenCache:
    """Thread-safe: concurrent callers for one app key share a single token request."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        api_base: str,
        clock: Callable[[], float],
        timeout: float = 10.0,
    ) -> None:
        self._client = client
        self._url = api_base.rstrip("/") + TOKEN_PATH
        self._clock = clock
        self._timeout = timeout
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, app_key: str, app_secret: str) -> str:
        digest = hashlib.sha256(app_secret.encode()).hexdigest()
        with self._guard:
            lock = self._locks.setdefault(app_key, threading.Lock())
        # One lock per app key: a slow token call for one tenant does not stall others.
        with lock:
            cached = self._cache.get(app_key)
            # A changed secret (rotation) must not keep serving the old app's token.
            if cached and cached.secret_digest == digest and self._clock() < cached.refresh_at:
                return cached.token
            token, expire_in = self._fetch(app_key, app_secret)
            # Short-lived tokens would otherwise be "due" at once; keep half their life.
            margin = min(REFRESH_MARGIN_S, expire_in / 2)
            self._cache[app_key] = _Cached(token, digest, self._clock() + expire_in - margin)
            return token

    def invalidate(self, app_key: str) -> None:
        """Forget a token DingTalk rejected, so the next `get` fetches a fresh one."""
        with self._guard:
            self._cache.pop(app_key, None)

    def _fetch(self, app_key: str, app_secret: str) -> tuple[str, float]:
        try:
            response = self._client.post(
                self._url,
                json={"appKey": app_key, "appSecret": app_secret},
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise network_error(exc, "access token request") from exc
        body = check_openapi_response(response, what="access token request", credentials=True)
        token = body.get("accessToken")
        expire_in = body.get("expireIn")
        if not isinstance(token, str) or not token:
            raise DingTalkDeliveryError("access token response has no accessToken", permanent=False)
        if isinstance(expire_in, bool) or not isinstance(expire_in, int | float | str):
            expire_in = None
        try:
            seconds = float(expire_in) if expire_in is not None else 0.0
        except ValueError:
            seconds = 0.0
        # Unknown lifetime: assume the documented-by-example 7200 s rather than none.
        return token, seconds if seconds > 0 else 7200.0
