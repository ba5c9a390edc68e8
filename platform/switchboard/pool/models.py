from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class InferenceEndpoint(models.Model):
    """One vLLM server (OpenAI-compatible API) of the GPU pool.

    The configuration fields are the operator's; the state fields are written by the
    health check (`pool_health_check`, run by Celery beat) and only read elsewhere.
    """

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(unique=True, help_text="Base URL without /v1, e.g. http://gpu-1:8000")
    model = models.CharField(max_length=200, default="Qwen/Qwen-7B-Chat")
    enabled = models.BooleanField(default=True)
    draining = models.BooleanField(
        default=False, help_text="Finish in-flight requests, take no new ones."
    )
    weight = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0.01), MaxValueValidator(100.0)],
        help_text="Relative share of traffic (e.g. 2 for a server with twice the GPUs).",
    )
    max_concurrency = models.PositiveIntegerField(
        default=32,
        validators=[MinValueValidator(1), MaxValueValidator(4096)],
        help_text="Most requests one worker process sends this server at once.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # Last health check.
    healthy = models.BooleanField(null=True, blank=True)
    running = models.FloatField(null=True, blank=True)
    waiting = models.FloatField(null=True, blank=True)
    kv_cache_usage = models.FloatField(null=True, blank=True)
    prefix_cache_hit_rate = models.FloatField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"
