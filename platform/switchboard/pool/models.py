from __future__ import annotations

from django.db import models


class InferenceEndpoint(models.Model):
    """One vLLM server (OpenAI-compatible API) of the GPU pool."""

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(unique=True, help_text="Base URL without /v1, e.g. http://gpu-1:8000")
    model = models.CharField(max_length=200, default="Qwen/Qwen-7B-Chat")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"
