"""How the OpenAPI schema describes API-key authentication (imported by the app's
`ready`, which registers the extension)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[misc]
    target_class = "switchboard.api.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The tenant's API key, `sb_<prefix>_<secret>`, with the scope "
            "the operation needs (read, write or chat).",
        }
