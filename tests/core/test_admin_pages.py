from __future__ import annotations

import pytest
from django.urls import reverse

from switchboard.conversations.models import Conversation, EndUser, Message
from switchboard.pool.models import InferenceEndpoint

pytestmark = pytest.mark.django_db

MODELS = [
    ("tenants", "tenant"),
    ("bots", "bot"),
    ("bots", "connector"),
    ("conversations", "enduser"),
    ("conversations", "conversation"),
    ("conversations", "message"),
    ("pool", "inferenceendpoint"),
]


@pytest.fixture
def populated(connector):
    end_user = EndUser.objects.create(tenant=connector.tenant, channel="webhook", external_id="u")
    conversation = Conversation.objects.create(
        tenant=connector.tenant,
        bot=connector.bot,
        connector=connector,
        end_user=end_user,
        external_key="user:u",
    )
    message = Message.objects.create(
        tenant=connector.tenant,
        conversation=conversation,
        connector=connector,
        direction="in",
        text="hello",
        provider_message_id="m",
        status="received",
    )
    endpoint = InferenceEndpoint.objects.create(name="gpu-1", url="http://gpu-1:8000")
    return {
        "tenant": connector.tenant,
        "bot": connector.bot,
        "connector": connector,
        "enduser": end_user,
        "conversation": conversation,
        "message": message,
        "inferenceendpoint": endpoint,
    }


@pytest.mark.parametrize("app, model", MODELS)
def test_admin_list_and_change_pages_render(admin_client, populated, app, model):
    listing = admin_client.get(reverse(f"admin:{app}_{model}_changelist"))
    assert listing.status_code == 200
    obj = populated[model]
    change = admin_client.get(reverse(f"admin:{app}_{model}_change", args=[obj.pk]))
    assert change.status_code == 200


def test_connector_admin_never_shows_the_secret(admin_client, connector):
    page = admin_client.get(reverse("admin:bots_connector_change", args=[connector.pk]))
    assert page.status_code == 200
    assert connector.secret not in page.content.decode()


def test_admin_requires_login(client):
    response = client.get(reverse("admin:bots_connector_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]
