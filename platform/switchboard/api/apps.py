from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "switchboard.api"
    label = "api"
    verbose_name = "Tenant API"

    def ready(self) -> None:
        from switchboard.api import schema  # noqa: F401  (registers the auth scheme)
