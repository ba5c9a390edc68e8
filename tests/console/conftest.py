"""Console users in each role, signed in through Django's test client."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client


@pytest.fixture
def make_console_user(db: None) -> Callable[..., Any]:
    """A user with a console role; `tenant` is required unless the role is operator."""
    from django.contrib.auth import get_user_model

    from switchboard.console.models import Membership

    def make(role: str, tenant: Any = None, *, password: str = "correct horse 9") -> Any:
        user = get_user_model().objects.create_user(
            username=f"{role}-{uuid.uuid4().hex[:6]}", password=password
        )
        Membership.objects.create(user=user, tenant=tenant, role=role)
        return user

    return make


@pytest.fixture
def signed_in(make_console_user: Callable[..., Any]) -> Callable[..., Client]:
    """A test client signed in as a new user of `role` (for `tenant`)."""

    def sign_in(role: str, tenant: Any = None) -> Client:
        client = Client()
        client.force_login(make_console_user(role, tenant))
        return client

    return sign_in


@pytest.fixture
def operator_client(signed_in: Callable[..., Client]) -> Client:
    return signed_in("operator")


@pytest.fixture
def admin_of(signed_in: Callable[..., Client]) -> Callable[[Any], Client]:
    return lambda tenant: signed_in("admin", tenant)


@pytest.fixture
def viewer_of(signed_in: Callable[..., Client]) -> Callable[[Any], Client]:
    return lambda tenant: signed_in("viewer", tenant)


@pytest.fixture
def other_tenant(db: None) -> Any:
    from switchboard.tenants.models import Tenant

    return Tenant.objects.create(name="Globex", slug=f"globex-{uuid.uuid4().hex[:8]}")
