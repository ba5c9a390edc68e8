"""ASGI entry point: Django for HTTP, Channels for WebSockets (live token streams), and
the OpenAI-compatible endpoint (`/v1/`), which skips Django's middleware (see
`switchboard.api.openai_app`)."""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchboard.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from switchboard.api.openai_app import app as openai_app  # noqa: E402
from switchboard.console.consumers import websocket_urlpatterns as console_ws  # noqa: E402


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"].startswith("/v1/"):
        await openai_app(scope, receive, send)
    else:
        await django_asgi_app(scope, receive, send)


# Sockets sign in with the console's session cookie; the origin check stands in for CSRF,
# which does not cover WebSockets.
application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter([*console_ws]))),
    }
)
