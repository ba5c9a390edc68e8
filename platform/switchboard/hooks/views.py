"""Channel ingress: verify → parse → persist → enqueue on commit → acknowledge.

Every refusal is a JSON error `{"error": {"code", "message", "details"?}}` and changes
nothing; a 2xx is only returned once the message is committed.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from connectors import aligenie, dingtalk
from connectors.base import IngressError, PayloadTooLarge, RateLimited, WrongTarget
from connectors.webhook import Profile, verify_and_parse_profile
from switchboard.bots.models import Connector
from switchboard.bots.selectors import connector_get_for_ingress
from switchboard.conversations import voice
from switchboard.conversations.services import message_receive

View = Callable[..., HttpResponse]


def error_response(
    status: int, code: str, message: str, details: list[dict[str, str]] | None = None
) -> JsonResponse:
    body: dict[str, object] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JsonResponse({"error": body}, status=status)


def _unknown(kind: str) -> JsonResponse:
    return error_response(404, "unknown_connector", f"no enabled {kind} connector with this id")


def ingress(view: View) -> View:
    """POST only, CSRF-exempt, and every `IngressError` becomes its JSON answer."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            response = error_response(405, "method_not_allowed", "use POST")
            response["Allow"] = "POST"
            return response
        try:
            return view(request, *args, **kwargs)
        except IngressError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.details)
            if isinstance(exc, RateLimited):
                response["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
            return response

    return wrapper


def read_body_limited(request: HttpRequest, limit: int) -> bytes:
    # Refuse on the declared length before reading anything, then enforce the limit on
    # what is actually read in case the header lies or is absent.
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    return body


@ingress
def webhook_inbound(request: HttpRequest, connector_id: str) -> HttpResponse:
    connector = connector_get_for_ingress(connector_id=connector_id, kind=Connector.Kind.WEBHOOK)
    if connector is None:
        return _unknown("webhook")
    limit = settings.SWITCHBOARD_WEBHOOK_MAX_BYTES
    inbound = verify_and_parse_profile(
        Profile(connector.verification_profile),
        secret=connector.secret,
        body=read_body_limited(request, limit),
        headers=request.headers,
        max_bytes=limit,
    )
    result = message_receive(connector=connector, inbound=inbound)
    return JsonResponse(
        {
            "id": str(result.message.pk),
            "message_id": inbound.provider_message_id,
            "status": result.message.status,
            "refusal": result.message.refusal or None,
            "duplicate": not result.created,
        },
        status=202,
    )


@ingress
def dingtalk_inbound(request: HttpRequest, connector_id: str) -> HttpResponse:
    connector = connector_get_for_ingress(connector_id=connector_id, kind=Connector.Kind.DINGTALK)
    if connector is None or connector.dingtalk_mode != Connector.DingTalkMode.HTTP:
        return _unknown("DingTalk HTTP-mode")
    # The signature covers only the timestamp, so it is checked before the body is read.
    dingtalk.verify_request(
        timestamp=request.headers.get("timestamp"),
        sign=request.headers.get("sign"),
        app_secret=connector.secret,
        now_ms=int(time.time() * 1000),
    )
    message = dingtalk.parse_message(
        read_body_limited(request, settings.SWITCHBOARD_WEBHOOK_MAX_BYTES)
    )
    dingtalk_check_target(connector, robot_code=message.robot_code, corp_id=message.chatbot_corp_id)
    message_receive(connector=connector, inbound=dingtalk.to_inbound(message))
    # The reply follows through the session webhook; "empty" tells DingTalk not to wait.
    return JsonResponse({"msgtype": "empty"})


def dingtalk_check_target(connector: Connector, *, robot_code: str, corp_id: str) -> None:
    """Replays can carry any body: pin what the connector is configured for."""
    if connector.robot_code and robot_code != connector.robot_code:
        raise WrongTarget("robotCode does not match this connector")
    if connector.corp_id and corp_id != connector.corp_id:
        raise WrongTarget("chatbotCorpId does not match this connector")


@ingress
def aligenie_inbound(request: HttpRequest, connector_id: str, token: str) -> HttpResponse:
    deadline_started = time.monotonic()
    connector = connector_get_for_ingress(connector_id=connector_id, kind=Connector.Kind.ALIGENIE)
    # A wrong token looks exactly like an unknown connector: the URL is the credential.
    if (
        connector is None
        or not connector.path_token
        or not hmac.compare_digest(token.encode(), connector.path_token.encode())
    ):
        return _unknown("Tmall Genie")
    query = aligenie.parse_query(
        read_body_limited(request, settings.SWITCHBOARD_ALIGENIE_MAX_BYTES),
        private_key_pem=connector.private_key or None,
        max_bytes=settings.SWITCHBOARD_ALIGENIE_MAX_BYTES,
    )
    aligenie.check_skill(query, expected_skill_id=connector.skill_id)
    answer = voice.voice_turn(
        connector=connector,
        inbound=aligenie.to_inbound(query),
        intent_id=query.intent_id,
        deadline=deadline_started + connector.voice_budget_ms / 1000.0,
    )
    return JsonResponse(answer, json_dumps_params={"ensure_ascii": False})


def aligenie_ownership_file(request: HttpRequest, name: str) -> HttpResponse:
    """The proof-of-ownership file the AliGenie console fetches when a URL is saved."""
    connector = Connector.objects.filter(
        kind=Connector.Kind.ALIGENIE, enabled=True, ownership_file_name=f"{name}.txt"
    ).first()
    if connector is None:
        return error_response(404, "not_found", "no such ownership file")
    return HttpResponse(connector.ownership_file_content, content_type="text/plain; charset=utf-8")
