from __future__ import annotations

from django.urls import path

from switchboard.console import views_otp

urlpatterns = [
    path("", views_otp.otp_settings, name="otp"),
    path("enable/", views_otp.otp_enable, name="otp_enable"),
    path("confirm/", views_otp.otp_confirm, name="otp_confirm"),
    path("cancel/", views_otp.otp_cancel, name="otp_cancel"),
    path("disable/", views_otp.otp_disable, name="otp_disable"),
    path("verify/", views_otp.otp_verify, name="otp_verify"),
]
