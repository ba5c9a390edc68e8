from __future__ import annotations

from django.apps import AppConfig


class HooksConfig(AppConfig):
    name = "switchboard.hooks"
    label = "hooks"
    verbose_name = "Channel ingress"
