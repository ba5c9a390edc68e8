"""Importing licences into the append-only ledger, and the limits they put in force."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.utils import IntegrityError

from switchboard.core.appendonly import AppendOnlyError
from switchboard.licensing.documents import (
    ExpiredLicence,
    LicenceTerms,
    TamperedLicence,
    UnknownSigningKey,
    sign_licence,
)
from switchboard.licensing.models import Licence
from switchboard.licensing.services import (
    DuplicateLicence,
    UnknownTenant,
    effective_limits,
    licence_current,
    licence_import,
    limits_cache_clear,
)
from switchboard.tenants.models import Tenant
from tests.licensing.conftest import b64url, envelope, make_terms, unb64url, utcnow

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("trusted")]


def ledger_row(tenant: Tenant, **overrides: Any) -> Licence:
    """A ledger row written directly, for dates `licence_import` would refuse."""
    terms = make_terms(tenant.slug, **overrides)
    return Licence.objects.create(
        tenant=tenant,
        licence_id=terms.licence_id,
        key_id="0" * 16,
        document="{}",
        issued_at=terms.issued_at,
        valid_from=terms.valid_from,
        valid_until=terms.valid_until,
        mau_limit=terms.mau_limit,
        connector_kinds=list(terms.connector_kinds),
        max_bots=terms.max_bots,
        enforcement=terms.enforcement,
    )


def test_import_appends_the_document_verbatim(tenant, issue):
    text = issue(tenant.slug, mau_limit=250, enforcement="soft")

    licence = licence_import(text=text, imported_by="ops@example.com")

    stored = Licence.objects.get()
    assert stored.pk == licence.pk
    assert stored.document == text
    assert stored.tenant == tenant
    assert (stored.mau_limit, stored.enforcement) == (250, "soft")
    assert stored.connector_kinds == ["dingtalk", "webhook"]
    assert stored.imported_by == "ops@example.com"
    assert stored.key_id == envelope(text)["key_id"]


@pytest.mark.parametrize(
    "spoil, error, message",
    [
        (lambda doc: {**doc, "payload": b64url(unb64url(doc["payload"])[:-2] + b"9}")},
         TamperedLicence, "signature does not match"),
        (lambda doc: {**doc, "key_id": "0123456789abcdef"},
         UnknownSigningKey, "not trusted by this installation"),
    ],
)  # fmt: skip
def test_rejected_import_changes_nothing(tenant, issue, spoil, error, message):
    ledger_row(tenant)
    text = json.dumps(spoil(envelope(issue(tenant.slug))))

    with pytest.raises(error, match=message):
        licence_import(text=text)
    assert Licence.objects.count() == 1


def test_unknown_tenant_is_refused(issue):
    with pytest.raises(UnknownTenant, match="no tenant with slug 'nobody'"):
        licence_import(text=issue("nobody"))
    assert not Licence.objects.exists()


def test_expired_licence_is_refused(tenant, issue):
    until = utcnow() - timedelta(hours=1)
    text = issue(tenant.slug, valid_from=until - timedelta(days=3), valid_until=until)

    with pytest.raises(ExpiredLicence, match="expired on"):
        licence_import(text=text)
    assert not Licence.objects.exists()


def test_future_licence_is_accepted_and_waits(tenant, issue):
    start = utcnow() + timedelta(days=10)
    licence_import(
        text=issue(tenant.slug, valid_from=start, valid_until=start + timedelta(days=365))
    )

    assert Licence.objects.count() == 1
    assert licence_current(tenant) is None
    assert effective_limits(tenant.pk).source == "free tier"
    assert licence_current(tenant, now=start) == Licence.objects.get()


def test_duplicate_import_is_refused(tenant, issue):
    text = issue(tenant.slug)
    licence_import(text=text, imported_by="alice")

    with pytest.raises(DuplicateLicence, match=r"already imported on .* by alice"):
        licence_import(text=text)
    assert Licence.objects.count() == 1


def test_orm_refuses_to_change_or_delete_a_licence(tenant):
    licence = ledger_row(tenant)
    licence.mau_limit = 10**9

    with pytest.raises(AppendOnlyError):
        licence.save()
    with pytest.raises(AppendOnlyError):
        licence.delete()
    assert Licence.objects.get().mau_limit == 1000


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE licensing_licence SET mau_limit = 1000000000 WHERE id = %s",
        "DELETE FROM licensing_licence WHERE id = %s",
    ],
)
def test_database_trigger_refuses_update_and_delete(tenant, sql):
    licence = ledger_row(tenant)

    # SQLSTATE 23001 (restrict_violation) is in the integrity class: IntegrityError.
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, [licence.pk])
    assert Licence.objects.get().mau_limit == 1000


def test_queryset_update_and_delete_are_refused_too(tenant):
    ledger_row(tenant)

    with pytest.raises(IntegrityError), transaction.atomic():
        Licence.objects.update(mau_limit=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Licence.objects.all().delete()
    assert Licence.objects.get().mau_limit == 1000


def test_free_tier_without_a_licence(tenant, settings):
    limits = effective_limits(tenant.pk)

    assert limits.source == "free tier"
    assert limits.mau_limit == settings.SWITCHBOARD_FREE_TIER["mau_limit"]
    assert limits.licence_id is None


def test_newest_issued_valid_licence_wins(tenant):
    now = utcnow()
    ledger_row(tenant, issued_at=now - timedelta(days=5), mau_limit=100)
    newest = ledger_row(tenant, issued_at=now - timedelta(days=1), mau_limit=500)
    ledger_row(tenant, issued_at=now - timedelta(days=3), mau_limit=300)
    # Issued later still, but expired or not started: ignored.
    ledger_row(
        tenant,
        issued_at=now,
        valid_from=now - timedelta(days=60),
        valid_until=now - timedelta(days=30),
        mau_limit=1,
    )
    ledger_row(
        tenant,
        issued_at=now,
        valid_from=now + timedelta(days=1),
        valid_until=now + timedelta(days=60),
        mau_limit=2,
    )
    other = Tenant.objects.create(name="Other", slug="other-tenant")
    ledger_row(other, issued_at=now, mau_limit=7)

    limits = effective_limits(tenant.pk)

    assert limits.source == "licence"
    assert limits.mau_limit == 500
    assert limits.licence_id == str(newest.licence_id)
    assert limits.valid_until == newest.valid_until
    assert limits.connector_kinds == frozenset({"webhook", "dingtalk"})
    assert effective_limits(other).mau_limit == 7


def test_same_issue_time_latest_row_wins(tenant):
    now = utcnow()
    ledger_row(tenant, issued_at=now, mau_limit=1)
    ledger_row(tenant, issued_at=now, mau_limit=2)

    assert effective_limits(tenant.pk).mau_limit == 2


def test_only_expired_licences_fall_back_to_free_tier(tenant):
    now = utcnow()
    ledger_row(tenant, valid_from=now - timedelta(days=40), valid_until=now - timedelta(days=1))

    assert effective_limits(tenant.pk).source == "free tier"


def test_empty_connector_kinds_means_all(tenant):
    ledger_row(tenant, connector_kinds=())

    limits = effective_limits(tenant.pk)
    assert limits.connector_kinds is None
    assert limits.allows_connector("aligenie")


def test_limits_are_cached_and_import_clears_the_cache(tenant, issue, settings):
    settings.SWITCHBOARD_LIMITS_CACHE_S = 3600
    assert effective_limits(tenant.pk).source == "free tier"

    # Written behind the service's back: the cached answer stands until it expires.
    ledger_row(tenant, mau_limit=42)
    assert effective_limits(tenant.pk).source == "free tier"
    limits_cache_clear()
    assert effective_limits(tenant.pk).mau_limit == 42

    licence_import(text=issue(tenant.slug, mau_limit=4242))
    assert effective_limits(tenant.pk).mau_limit == 4242


def test_zero_ttl_does_not_cache(tenant, settings):
    settings.SWITCHBOARD_LIMITS_CACHE_S = 0
    assert effective_limits(tenant.pk).source == "free tier"
    ledger_row(tenant)
    assert effective_limits(tenant.pk).source == "licence"


def test_accepts_a_tenant_or_its_id(tenant):
    ledger_row(tenant, mau_limit=9)

    assert effective_limits(tenant).mau_limit == 9
    assert effective_limits(str(tenant.pk)).mau_limit == 9


def test_terms_round_trip_through_the_ledger(tenant, signing_pem):
    terms = make_terms(tenant.slug, connector_kinds=(), max_bots=None)
    licence = licence_import(text=sign_licence(terms, signing_pem))

    assert (
        LicenceTerms(
            licence_id=licence.licence_id,
            tenant=licence.tenant.slug,
            issued_at=licence.issued_at,
            valid_from=licence.valid_from,
            valid_until=licence.valid_until,
            mau_limit=licence.mau_limit,
            monthly_tokens=licence.monthly_tokens,
            tenant_messages_per_minute=licence.tenant_messages_per_minute,
            user_messages_per_minute=licence.user_messages_per_minute,
            connector_kinds=tuple(licence.connector_kinds),
            max_bots=licence.max_bots,
            enforcement=licence.enforcement,
        )
        == terms
    )
