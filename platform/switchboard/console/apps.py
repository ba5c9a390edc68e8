from __future__ import annotations

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "switchboard.console"
    label = "console"
    verbose_name = "Console"

    def ready(self) -> None:
        from switchboard.console import signals  # noqa: F401 (connects receivers)
