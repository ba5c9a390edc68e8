"""Overview: the first page after sign-in."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from switchboard.console.access import console_view


@console_view()
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "console/overview.html", {})
