from __future__ import annotations

from django.urls import path

from switchboard.console import views_audit

urlpatterns = [
    path("", views_audit.audit_log, name="audit"),
]
