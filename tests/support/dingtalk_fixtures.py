"""Helpers for DingTalk HTTP-callback tests against the Django ingress and a real worker.

Plain functions, not fixtures: each test module declares the few fixtures it needs (the
fake's scope differs between the ingress tests and the end-to-end ones).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.support.fake_dingtalk import FakeDingTalk

# What `FakeDingTalk.make_callback` puts in `chatbotCorpId`.
FAKE_CORP_ID = "dingfakecorp"


def create_dingtalk_connector(
    bot: Any,
    ding: FakeDingTalk,
    *,
    own_app: bool = False,
    mode: str = "http",
    robot_code: str | None = None,
    corp_id: str = FAKE_CORP_ID,
) -> Any:
    """A DingTalk connector for `bot` whose credentials the fake knows.

    `own_app`: register a fresh app key, secret and robot code with the fake, so access
    tokens a long-lived worker cached for earlier tests' apps cannot be reused.
    """
    from switchboard.bots.services import connector_create_dingtalk

    app_key, app_secret = ding.app_key, ding.app_secret
    code = ding.robot_code if robot_code is None else robot_code
    if own_app:
        suffix = uuid.uuid4().hex[:12]
        app_key, app_secret = f"dingapp{suffix}", f"secret-{uuid.uuid4().hex}"
        code = f"dingrobot{suffix}"
        ding.register_app(app_key, app_secret)
        ding.register_robot(code)
    return connector_create_dingtalk(
        bot=bot,
        name="DingTalk",
        app_key=app_key,
        app_secret=app_secret,
        robot_code=code,
        corp_id=corp_id,
        mode=mode,
    )


def callback_for(connector: Any, ding: FakeDingTalk, **kw: Any) -> tuple[dict[str, str], bytes]:
    """A callback signed with the connector's secret, naming its robot."""
    kw.setdefault("app_secret", connector.secret)
    kw.setdefault("robot_code", connector.robot_code or None)
    return ding.make_callback(**kw)


def post_callback(
    base_url: str, connector_id: str, headers: dict[str, str], body: bytes
) -> httpx.Response:
    """POST a callback to the DingTalk ingress over real HTTP."""
    return httpx.post(
        f"{base_url}/hooks/dingtalk/{connector_id}/",
        content=body,
        headers=headers,
        timeout=30,
        # A proxy from the environment must not intercept 127.0.0.1.
        trust_env=False,
    )


def body_without(body: bytes, *fields: str) -> bytes:
    data = json.loads(body)
    for name in fields:
        data.pop(name, None)
    return json.dumps(data, ensure_ascii=False).encode()


def session_token(body: dict[str, Any]) -> str:
    """The `session=` token of a callback body's session webhook URL."""
    return str(body["sessionWebhook"]).rsplit("session=", 1)[1]
