"""The Celery app, configured from Django settings under the CELERY_ namespace."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchboard.settings")

app = Celery("switchboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Voice replies must beat chat, and chat must beat housekeeping: one queue each, so a
# deployment can give each its own workers.
app.conf.task_queues = (Queue("realtime"), Queue("chat"), Queue("default"))
app.autodiscover_tasks()
