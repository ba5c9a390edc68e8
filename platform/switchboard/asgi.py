"""ASGI entry point: Django for HTTP, Channels for WebSockets (live token streams)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchboard.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from switchboard.console.consumers import websocket_urlpatterns as console_ws  # noqa: E402

# Sockets sign in with the console's session cookie; the origin check stands in for CSRF,
# which does not cover WebSockets.
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter([*console_ws]))),
    }
)
