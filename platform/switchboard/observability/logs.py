"""Logging configuration: human-readable lines for development, JSON lines in production.

Every record carries `request_id`: the id of the HTTP request being served (the
`X-Request-ID` header if it holds a UUID, else a new one, set by django-guid's
middleware), and in a Celery worker the id of the request whose work the task carries
on (django-guid passes it along in the task's message headers). So one id follows a
message from its ingress, through generation, to its delivery.

Imported by settings: nothing here may import Django models.
"""

from __future__ import annotations

import logging
from typing import Any

PLAIN = "plain"
JSON = "json"
FORMATS = (PLAIN, JSON)


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` (django-guid's id for this request or task)."""

    def __init__(self, placeholder: str | None = None) -> None:
        super().__init__()
        self.placeholder = placeholder

    def filter(self, record: logging.LogRecord) -> bool:
        from django_guid import get_guid

        record.request_id = get_guid() or self.placeholder
        return True


def logging_config(*, fmt: str, level: str) -> dict[str, Any]:
    """The LOGGING setting for `fmt` ("plain" or "json")."""
    if fmt not in FORMATS:
        raise ValueError(f"SWITCHBOARD_LOG_FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
    formatters: dict[str, Any] = {
        PLAIN: {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        JSON: {
            "()": "pythonjsonlogger.json.JsonFormatter",
            # Fields every line has; anything passed as `extra=` is added after them.
            "fmt": "%(levelname)s %(name)s %(message)s %(request_id)s %(process)d",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
        },
    }
    loggers: dict[str, Any] = {
        # pgserver narrates every handle it opens and closes at INFO.
        "pgserver": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        # django-guid logs every id it reads or makes at INFO: the id is on every line
        # anyway.
        "django_guid": {"level": "WARNING"},
    }
    if fmt == JSON:
        # uvicorn installs its own text handlers before Django starts; in JSON mode its
        # lines (startup, errors) must be JSON too, or a log shipper chokes on them.
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            loggers[name] = {"handlers": ["console"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {
                "()": "switchboard.observability.logs.RequestIdFilter",
                # A line logged outside any request or task: null in JSON, "-" in text.
                "placeholder": None if fmt == JSON else "-",
            }
        },
        "formatters": formatters,
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": loggers,
    }
