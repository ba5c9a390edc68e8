from __future__ import annotations

from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "switchboard.observability"
    label = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from switchboard.observability import checks, signals

        signals.connect()
        checks.register()
