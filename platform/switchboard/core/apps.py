from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "switchboard.core"
    label = "core"
    verbose_name = "Switchboard core"
