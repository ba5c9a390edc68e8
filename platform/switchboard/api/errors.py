"""One error shape for the REST API: `{"error": {"code", "message", "details"}}`.

`code` is stable (clients branch on it), `message` is for people, `details` (validation
errors only) maps each field to what is wrong with it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

_CODES: dict[type[Exception], str] = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_json",
    exceptions.Throttled: "rate_limited",
    exceptions.ValidationError: "validation_error",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _code(exc: exceptions.APIException) -> str:
    # A code given where the error is raised (e.g. "insufficient_scope") beats the
    # class's generic one.
    detail = exc.detail
    if isinstance(detail, exceptions.ErrorDetail) and detail.code not in (
        None,
        exc.default_code,
    ):
        return str(detail.code)
    for cls, code in _CODES.items():
        if isinstance(exc, cls):
            return code
    return str(exc.default_code)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("request_too_large", "The request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in %s", context.get("view"), exc_info=exc)
        return Response(
            error_body("internal_error", "Something went wrong on our side; it is logged."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("validation_error", "The request is not valid.", response.data)
    elif isinstance(exc, exceptions.Throttled):
        body = error_body(
            "rate_limited", f"Too many requests; retry after {exc.wait or 1:.0f} seconds."
        )
    else:
        body = error_body(_code(exc), str(exc.detail))
    response.data = body
    return response


@csrf_exempt  # the API has no cookies to forge; a POST here is a 404, not an HTML 403
def api_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """404 for any URL under /api/ that no route matches, in the API's shape."""
    return JsonResponse(error_body("not_found", f"No such endpoint: {request.path}"), status=404)
