from __future__ import annotations

from django.apps import AppConfig


class ApiKeysConfig(AppConfig):
    name = "switchboard.apikeys"
    label = "apikeys"
    verbose_name = "API keys"
