from __future__ import annotations

from django.apps import AppConfig


class PoolConfig(AppConfig):
    name = "switchboard.pool"
    label = "pool"
    verbose_name = "GPU pool"
