"""Console operator pages: tenants (list, create, suspend) and licences (import, ledger)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from switchboard.licensing.documents import generate_private_key_pem, public_key_b64, sign_licence
from switchboard.licensing.models import Licence
from switchboard.licensing.services import licence_import, limits_cache_clear
from switchboard.tenants.models import Tenant
from tests.licensing.conftest import b64url, envelope, make_terms, unb64url, utcnow

pytestmark = pytest.mark.django_db

IMPORT = reverse("console:licence_import")


@pytest.fixture(autouse=True)
def _fresh_limits_cache() -> Iterator[None]:
    limits_cache_clear()
    yield
    limits_cache_clear()


@pytest.fixture(scope="session")
def signing_pem() -> bytes:
    return generate_private_key_pem()


@pytest.fixture(autouse=True)
def trusted(settings: Any, signing_pem: bytes) -> None:
    settings.SWITCHBOARD_LICENCE_PUBLIC_KEYS = [public_key_b64(signing_pem)]


@pytest.fixture
def issue(signing_pem: bytes) -> Callable[..., str]:
    def issue(tenant: str, **overrides: Any) -> str:
        return sign_licence(make_terms(tenant, **overrides), signing_pem)

    return issue


def row_of(page: str, licence_id: Any) -> str:
    """The table row that shows one licence."""
    rows = re.findall(r"<tr>.*?</tr>", page, flags=re.DOTALL)
    return next(row for row in rows if f">{licence_id}</code>" in row)


def operator_pages(tenant: Any) -> list[tuple[str, str]]:
    return [
        ("get", reverse("console:tenant_list")),
        ("get", reverse("console:tenant_create")),
        ("post", reverse("console:tenant_create")),
        ("get", reverse("console:tenant_detail", args=[tenant.pk])),
        ("get", reverse("console:tenant_set_active", args=[tenant.pk])),
        ("post", reverse("console:tenant_set_active", args=[tenant.pk])),
        ("get", reverse("console:licence_list")),
        ("get", IMPORT),
        ("post", IMPORT),
    ]


def test_urls_are_where_the_sidebar_points() -> None:
    assert reverse("console:tenant_list") == "/console/tenants/"
    assert reverse("console:licence_list") == "/console/licences/"


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_operator_pages_do_not_exist_for_tenant_users(
    signed_in: Callable[..., Client], tenant: Any, role: str
) -> None:
    client = signed_in(role, tenant)

    for method, url in operator_pages(tenant):
        assert (
            getattr(client, method)(url, {"name": "X", "slug": "x", "active": "0"}).status_code
            == 404
        ), url

    tenant.refresh_from_db()
    assert tenant.is_active
    assert not Tenant.objects.filter(slug="x").exists()


def test_tenant_list_shows_mau_licence_and_status(
    operator_client: Client, tenant: Any, other_tenant: Any, issue: Callable[..., str]
) -> None:
    from switchboard.metering.models import MauCounter
    from switchboard.metering.selectors import month_start

    MauCounter.objects.create(tenant=tenant, month=month_start(), active=421)
    licence_import(text=issue(tenant.slug, mau_limit=1000))
    other_tenant.is_active = False
    other_tenant.save()

    page = operator_client.get(reverse("console:tenant_list")).content.decode()

    assert tenant.name in page and other_tenant.name in page
    assert "421" in page and "1000" in page
    assert "licence" in page and "free tier" in page
    assert "suspended" in page


def test_operator_creates_a_tenant(operator_client: Client, tenant: Any) -> None:
    answer = operator_client.post(
        reverse("console:tenant_create"), {"name": "Initech", "slug": "initech"}
    )

    created = Tenant.objects.get(slug="initech")
    assert answer.status_code == 302
    assert answer["Location"] == reverse("console:tenant_detail", args=[created.pk])
    assert created.name == "Initech" and created.is_active

    duplicate = operator_client.post(
        reverse("console:tenant_create"), {"name": "Copy", "slug": tenant.slug}
    )
    assert duplicate.status_code == 200
    assert "already exists" in duplicate.content.decode()
    bad = operator_client.post(reverse("console:tenant_create"), {"name": "X", "slug": "no spaces"})
    assert bad.status_code == 200
    assert Tenant.objects.count() == 2


def test_suspend_asks_first_then_locks_the_tenant_out(
    operator_client: Client, admin_of: Callable[[Any], Client], tenant: Any
) -> None:
    tenant_admin = admin_of(tenant)
    url = reverse("console:tenant_set_active", args=[tenant.pk])

    confirm = operator_client.get(url)
    assert confirm.status_code == 200
    assert "Suspend tenant" in confirm.content.decode()
    tenant.refresh_from_db()
    assert tenant.is_active  # asking changes nothing

    done = operator_client.post(url, {"active": "0"}, follow=True)
    tenant.refresh_from_db()
    assert not tenant.is_active
    assert "suspended" in done.content.decode()
    assert tenant_admin.get("/console/").status_code == 403

    assert "Reactivate tenant" in operator_client.get(url).content.decode()
    operator_client.post(url, {"active": "1"})
    tenant.refresh_from_db()
    assert tenant.is_active
    assert tenant_admin.get("/console/").status_code == 200


def test_import_a_pasted_licence(
    operator_client: Client, tenant: Any, issue: Callable[..., str]
) -> None:
    form = operator_client.get(IMPORT)
    assert 'enctype="multipart/form-data"' in form.content.decode()

    answer = operator_client.post(IMPORT, {"document": issue(tenant.slug)}, follow=True)

    licence = Licence.objects.get()
    page = answer.content.decode()
    assert answer.redirect_chain[-1][0] == reverse("console:tenant_detail", args=[tenant.pk])
    assert f"Imported licence {licence.licence_id}" in page
    assert "in force" in page
    assert licence.tenant == tenant
    assert licence.imported_by.startswith("operator-")


def test_import_an_uploaded_licence(
    operator_client: Client, tenant: Any, issue: Callable[..., str]
) -> None:
    upload = SimpleUploadedFile("acme.licence", issue(tenant.slug).encode())

    answer = operator_client.post(IMPORT, {"document": "", "file": upload})

    assert answer.status_code == 302
    assert Licence.objects.filter(tenant=tenant).count() == 1


def test_a_tampered_licence_shows_why_and_stores_nothing(
    operator_client: Client, tenant: Any, issue: Callable[..., str]
) -> None:
    document = envelope(issue(tenant.slug, mau_limit=10))
    payload = unb64url(document["payload"]).replace(b'"mau_limit":10', b'"mau_limit":99')
    document["payload"] = b64url(payload)

    answer = operator_client.post(IMPORT, {"document": json.dumps(document)})

    assert answer.status_code == 200
    page = answer.content.decode()
    assert "Licence refused" in page
    assert "signature does not match" in page
    assert not Licence.objects.exists()


def test_other_refusals_are_explained(
    operator_client: Client, tenant: Any, issue: Callable[..., str], signing_pem: bytes
) -> None:
    unknown = operator_client.post(IMPORT, {"document": issue("no-such-tenant")})
    assert "no tenant with slug" in unknown.content.decode()

    expired = issue(
        tenant.slug,
        valid_from=utcnow() - timedelta(days=60),
        valid_until=utcnow() - timedelta(days=1),
    )
    assert "expired" in operator_client.post(IMPORT, {"document": expired}).content.decode()

    text = issue(tenant.slug)
    operator_client.post(IMPORT, {"document": text})
    again = operator_client.post(IMPORT, {"document": text})
    assert "already imported" in again.content.decode()

    empty = operator_client.post(IMPORT, {"document": "  "})
    assert "Paste a licence document" in empty.content.decode()
    assert "Licence refused" in operator_client.post(IMPORT, {"document": "{}"}).content.decode()
    assert Licence.objects.count() == 1


def test_licence_history_marks_the_one_in_force(
    operator_client: Client, tenant: Any, other_tenant: Any, issue: Callable[..., str]
) -> None:
    now = utcnow()
    old = licence_import(text=issue(tenant.slug, issued_at=now - timedelta(days=3)))
    current = licence_import(text=issue(tenant.slug, issued_at=now - timedelta(days=1)))
    future = licence_import(
        text=issue(
            tenant.slug,
            issued_at=now,
            valid_from=now + timedelta(days=10),
            valid_until=now + timedelta(days=40),
            connector_kinds=(),
            max_bots=None,
        )
    )
    theirs = licence_import(text=issue(other_tenant.slug))

    detail = operator_client.get(
        reverse("console:tenant_detail", args=[tenant.pk])
    ).content.decode()
    listing = operator_client.get(reverse("console:licence_list")).content.decode()

    for page in (detail, listing):
        assert ">in force<" in row_of(page, current.licence_id)
        assert ">superseded<" in row_of(page, old.licence_id)
        assert ">not yet valid<" in row_of(page, future.licence_id)
        assert page.count(">in force<") == (1 if page is detail else 2)
    assert f"licence {current.licence_id}" in detail  # the limits in force name it
    assert str(theirs.licence_id) not in detail
    assert str(theirs.licence_id) in listing

    # With a tenant picked, the ledger shows that tenant's licences only.
    operator_client.post(reverse("console:pick_tenant"), {"tenant": str(other_tenant.pk)})
    picked = operator_client.get(reverse("console:licence_list")).content.decode()
    assert str(theirs.licence_id) in picked
    assert str(old.licence_id) not in picked
