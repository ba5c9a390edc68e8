from __future__ import annotations

from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "switchboard.licensing"
    label = "licensing"
    verbose_name = "Licensing"
