"""The licence admin: a read-only ledger with an import page."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from switchboard.licensing.models import Licence, ModelLicence
from tests.licensing.conftest import b64url, envelope, unb64url

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("trusted")]

LIST = reverse("admin:licensing_licence_changelist")
IMPORT = reverse("admin:licensing_licence_import")


def test_import_url_is_the_obvious_one():
    assert IMPORT == "/admin/licensing/licence/import/"


def test_changelist_links_to_import(admin_client):
    page = admin_client.get(LIST)

    assert page.status_code == 200
    assert IMPORT in page.content.decode()
    form = admin_client.get(IMPORT)
    assert form.status_code == 200
    assert 'enctype="multipart/form-data"' in form.content.decode()


def test_import_a_pasted_licence(admin_client, admin_user, tenant, issue):
    text = issue(tenant.slug)

    answer = admin_client.post(IMPORT, {"document": text}, follow=True)

    licence = Licence.objects.get()
    assert answer.redirect_chain[-1][0] == LIST
    assert f"Imported licence {licence.licence_id}" in answer.content.decode()
    assert licence.document == text.strip()
    assert licence.imported_by == admin_user.username


def test_import_an_uploaded_licence(admin_client, tenant, issue):
    upload = SimpleUploadedFile("acme.licence", issue(tenant.slug).encode())

    answer = admin_client.post(IMPORT, {"document": "", "file": upload})

    assert answer.status_code == 302
    assert Licence.objects.count() == 1


def test_rejected_import_shows_why_and_changes_nothing(admin_client, tenant, issue):
    document = envelope(issue(tenant.slug, mau_limit=10))
    payload = unb64url(document["payload"]).replace(b'"mau_limit":10', b'"mau_limit":99')
    document["payload"] = b64url(payload)

    answer = admin_client.post(IMPORT, {"document": json.dumps(document)})

    assert answer.status_code == 200
    assert "signature does not match" in answer.content.decode()
    assert not Licence.objects.exists()


def test_unknown_tenant_and_empty_form(admin_client, issue):
    answer = admin_client.post(IMPORT, {"document": issue("no-such-tenant")})
    assert "no tenant with slug" in answer.content.decode()

    answer = admin_client.post(IMPORT, {"document": "  "})
    assert "Paste a licence document" in answer.content.decode()
    assert not Licence.objects.exists()


def test_ledger_is_read_only(admin_client, tenant, issue):
    admin_client.post(IMPORT, {"document": issue(tenant.slug)})
    licence = Licence.objects.get()
    change = reverse("admin:licensing_licence_change", args=[licence.pk])

    page = admin_client.get(change)
    assert page.status_code == 200
    assert "verified (key" in page.content.decode()
    # Posting the change form of a view-only object changes nothing.
    admin_client.post(change, {"mau_limit": "1"})
    assert Licence.objects.get().mau_limit == licence.mau_limit
    assert admin_client.get(reverse("admin:licensing_licence_add")).status_code == 403
    delete = reverse("admin:licensing_licence_delete", args=[licence.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Licence.objects.count() == 1


def test_import_needs_the_add_permission(tenant, issue):
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_licence"))
    client = Client()
    client.force_login(staff)

    assert IMPORT not in client.get(LIST).content.decode()
    assert client.post(IMPORT, {"document": issue(tenant.slug)}).status_code == 403
    assert not Licence.objects.exists()


def test_model_licences_are_editable(admin_client):
    qwen = ModelLicence.objects.get(model_name="Qwen/Qwen-7B-Chat")
    change = reverse("admin:licensing_modellicence_change", args=[qwen.pk])

    assert admin_client.get(reverse("admin:licensing_modellicence_changelist")).status_code == 200
    answer = admin_client.post(
        change,
        {
            "model_name": qwen.model_name,
            "licence_name": qwen.licence_name,
            "mau_threshold": "200000000",
            "terms_url": qwen.terms_url,
            "notes": "renegotiated",
        },
    )
    assert answer.status_code == 302
    qwen.refresh_from_db()
    assert (qwen.mau_threshold, qwen.notes) == (200_000_000, "renegotiated")
