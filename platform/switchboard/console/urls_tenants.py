"""Operator pages: tenants at /console/tenants/, licences at /console/licences/."""

from __future__ import annotations

from django.urls import path

from switchboard.console import views_tenants

urlpatterns = [
    path("", views_tenants.tenant_list, name="tenant_list"),
    path("new/", views_tenants.tenant_create, name="tenant_create"),
    path("<uuid:pk>/", views_tenants.tenant_detail, name="tenant_detail"),
    path("<uuid:pk>/active/", views_tenants.tenant_set_active, name="tenant_set_active"),
]

# Mounted by the console's urls.py under "licences/".
licence_urlpatterns = [
    path("", views_tenants.licence_list, name="licence_list"),
    path("import/", views_tenants.licence_import_page, name="licence_import"),
]
