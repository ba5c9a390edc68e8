from __future__ import annotations

from django.apps import AppConfig


class MeteringConfig(AppConfig):
    name = "switchboard.metering"
    label = "metering"
    verbose_name = "Metering"
