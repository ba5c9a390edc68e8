from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import translation

from switchboard.console.signals import LANGUAGE_SESSION_KEY


class UserLanguageMiddleware:
    """The signed-in user's console language (chosen in the console, kept in the session
    from login) wins over the browser's Accept-Language."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        language = (
            request.session.get(LANGUAGE_SESSION_KEY) if hasattr(request, "session") else None
        )
        if language:
            translation.activate(language)
            request.LANGUAGE_CODE = translation.get_language()
        response = self.get_response(request)
        if language:
            response.headers.setdefault("Content-Language", language)
        return response
