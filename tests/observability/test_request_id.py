"""One request id, from the webhook's ingress through generation to delivery, in the JSON
logs of real processes: the ASGI app under uvicorn, a Celery worker, a simulated vLLM
endpoint and a callback receiver."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.webhook import sign_headers
from tests.support import processes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 60
JSON_LOGS = {"SWITCHBOARD_LOG_FORMAT": "json"}


@pytest.fixture(scope="module")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("json-logs")


@pytest.fixture(scope="module")
def platform(
    django_db_setup: None, django_db_blocker: Any, logs_dir: Path, redis_client: Any
) -> Iterator[str]:
    """Web and worker on the test database, both logging JSON to files."""
    from django.conf import settings

    redis_client.delete("realtime", "chat", "default")
    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    env = {
        **JSON_LOGS,
        "SWITCHBOARD_WEBHOOK_RETRY": "exponential",
        "SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS": "true",
        "SWITCHBOARD_LIMITS_CACHE_S": "0",
        "SWITCHBOARD_POOL_REFRESH_S": "0",
    }
    with (
        processes.celery_worker(
            logs_dir, database_url=database_url, redis_url=settings.REDIS_URL, extra_env=env
        ),
        processes.web_server(
            logs_dir, database_url=database_url, redis_url=settings.REDIS_URL, extra_env=env
        ) as url,
    ):
        yield url


def _records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a process's output (anything else, e.g. Celery's banner on
    stdout, is not a log record)."""
    records = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def _post(base: str, connector: Any, message_id: str, headers: dict[str, str]) -> httpx.Response:
    body = json.dumps({"message_id": message_id, "user_id": "frank", "text": "status?"})
    signed = sign_headers(secret=connector.secret, event_id=f"msg_{uuid.uuid4().hex}", body=body)
    return httpx.post(
        f"{base}/hooks/webhook/{connector.pk}/",
        content=body,
        headers={"content-type": "application/json", **signed, **headers},
        timeout=30,
    )


def _trace(logs_dir: Path, request_id: str, reply_id: str) -> dict[str, list[dict[str, Any]]]:
    """The records carrying `request_id`, once the delivery line of `reply_id` is there."""

    def delivered() -> dict[str, list[dict[str, Any]]] | None:
        worker = [r for r in _records(logs_dir / "worker.log") if r["request_id"] == request_id]
        if not any(r.get("message_id") == reply_id for r in worker):
            return None
        web = [r for r in _records(logs_dir / "web.log") if r["request_id"] == request_id]
        return {"web": web, "worker": worker}

    return wait_until(delivered, timeout=TIMEOUT, what="the delivery's log line")


def test_the_request_id_follows_a_message_from_ingress_to_delivery(
    platform: str, logs_dir: Path, endpoint: Any, connector: Any, receiver: Any
) -> None:
    from switchboard.conversations.models import Message

    request_id = uuid.uuid4().hex
    response = _post(platform, connector, "trace-1", {"X-Request-ID": request_id})
    assert response.status_code == 202, response.text
    assert response.headers["X-Request-ID"] == request_id
    wait_until(receiver.accepted, timeout=TIMEOUT, what="the signed callback")
    reply = wait_until(
        lambda: Message.objects.filter(direction="out", status="delivered").first(),
        timeout=TIMEOUT,
        what="the reply to be delivered",
    )

    trace = _trace(logs_dir, request_id, str(reply.pk))

    # Ingress: the web process's line for the webhook request.
    ingress = [r for r in trace["web"] if r["logger"] == "switchboard.access"]
    assert len(ingress) == 1
    assert ingress[0]["path"] == f"/hooks/webhook/{connector.pk}/"
    assert ingress[0]["status"] == 202 and ingress[0]["method"] == "POST"
    assert {"time", "level", "message", "process"} <= set(ingress[0])

    # Generation: the worker's lines for the task that wrote the reply.
    inbound = Message.objects.get(direction="in", provider_message_id="trace-1")
    generation = [r for r in trace["worker"] if "generate_reply" in r["message"]]
    started = [r for r in generation if r["logger"] == "switchboard.tasks"]
    assert started and started[0]["task_args"] == [str(inbound.pk)]
    assert any("succeeded" in r["message"] for r in generation), generation

    # Delivery: the line of the attempt that reached the receiver, and its task's end.
    attempts = [r for r in trace["worker"] if r["logger"] == "switchboard.delivery"]
    assert [(a["message_id"], a["outcome"]) for a in attempts] == [(str(reply.pk), "delivered")]
    assert 200 <= attempts[0]["http_status"] < 300
    assert any(
        "deliver_reply" in r["message"] and "succeeded" in r["message"] for r in trace["worker"]
    )

    # Nothing of this message was logged under another id by the worker.
    others = [
        r
        for r in _records(logs_dir / "worker.log")
        if r.get("message_id") == str(reply.pk) and r["request_id"] != request_id
    ]
    assert not others


def test_without_a_usable_header_an_id_is_made_and_still_followed(
    platform: str, logs_dir: Path, endpoint: Any, connector: Any, receiver: Any
) -> None:
    from switchboard.conversations.models import Message

    # Not a UUID: a client's free text is not copied into every log line.
    response = _post(platform, connector, "trace-2", {"X-Request-ID": "drop table; --"})
    assert response.status_code == 202, response.text
    request_id = response.headers["X-Request-ID"]
    assert request_id != "drop table; --"
    assert uuid.UUID(request_id)
    reply = wait_until(
        lambda: Message.objects.filter(direction="out", status="delivered").first(),
        timeout=TIMEOUT,
        what="the reply to be delivered",
    )

    trace = _trace(logs_dir, request_id, str(reply.pk))

    assert [r["status"] for r in trace["web"] if r["logger"] == "switchboard.access"] == [202]
    assert any(r.get("task", "").endswith("generate_reply") for r in trace["worker"])
