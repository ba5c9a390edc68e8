"""Channel ingress: verify → parse → persist → enqueue on commit → acknowledge.

Every refusal is a JSON error `{"error": {"code", "message", "details"?}}` and changes
nothing; a 2xx is only returned once the message is committed.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from connectors import webhook
from connectors.base import IngressError, PayloadTooLarge
from switchboard.bots.models import Connector
from switchboard.bots.selectors import connector_get_for_ingress
from switchboard.conversations.services import message_receive


def error_response(
    status: int, code: str, message: str, details: list[dict[str, str]] | None = None
) -> JsonResponse:
    body: dict[str, object] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JsonResponse({"error": body}, status=status)


def _read_body_limited(request: HttpRequest, limit: int) -> bytes:
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


@csrf_exempt
def webhook_inbound(request: HttpRequest, connector_id: str) -> JsonResponse:
    if request.method != "POST":
        response = error_response(405, "method_not_allowed", "use POST")
        response["Allow"] = "POST"
        return response
    connector = connector_get_for_ingress(connector_id=connector_id, kind=Connector.Kind.WEBHOOK)
    if connector is None:
        return error_response(404, "unknown_connector", "no enabled webhook connector with this id")
    limit = settings.SWITCHBOARD_WEBHOOK_MAX_BYTES
    try:
        body = _read_body_limited(request, limit)
        inbound = webhook.verify_and_parse(
            secret=connector.secret, body=body, headers=request.headers, max_bytes=limit
        )
    except IngressError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    result = message_receive(connector=connector, inbound=inbound)
    return JsonResponse(
        {
            "id": str(result.message.pk),
            "message_id": inbound.provider_message_id,
            "status": result.message.status,
            "duplicate": not result.created,
        },
        status=202,
    )
