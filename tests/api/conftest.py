"""Fixtures for the tenant API: keys, an API client, and the ASGI app under uvicorn
(the OpenAI-compatible endpoint is served by the ASGI app only)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import processes


@pytest.fixture
def make_key(db: None) -> Callable[..., tuple[Any, str]]:
    from switchboard.apikeys.services import api_key_create

    def make(tenant: Any, scopes: tuple[str, ...] = ("read", "write", "chat"), **kw: Any) -> Any:
        return api_key_create(
            tenant=tenant, name=f"key-{uuid.uuid4().hex[:6]}", scopes=scopes, **kw
        )

    return make


@pytest.fixture
def key(tenant: Any, make_key: Callable[..., tuple[Any, str]]) -> str:
    return make_key(tenant)[1]


@pytest.fixture
def api(key: str) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def other_tenant(db: None) -> Any:
    from switchboard.tenants.models import Tenant

    return Tenant.objects.create(name="Globex", slug=f"globex-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def web(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """uvicorn serving `switchboard.asgi` on the test database."""
    from django.conf import settings

    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    env = {"SWITCHBOARD_POOL_REFRESH_S": "0", "SWITCHBOARD_LIMITS_CACHE_S": "0"}
    with processes.web_server(
        tmp_path_factory.mktemp("api-web"),
        database_url=database_url,
        redis_url=settings.REDIS_URL,
        extra_env=env,
    ) as url:
        yield url
