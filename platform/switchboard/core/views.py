from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "switchboard/home.html")


def healthz(request: HttpRequest) -> JsonResponse:
    """Process liveness only; readiness (database, Redis, pool) is a separate check."""
    return JsonResponse({"status": "ok"})
