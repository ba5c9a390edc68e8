from __future__ import annotations

from typing import Any

from django.db import models

from switchboard.core import crypto


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; Python code only ever sees the plaintext.

    Encryption is randomised, so the column cannot be filtered on: look rows up by id.
    """

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        return crypto.decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return crypto.encrypt(value)


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedTextField]]:
    """Every encrypted column of every installed model (what key rotation rewrites)."""
    from django.apps import apps

    return [
        (model, field)
        for model in apps.get_models()
        if not model._meta.proxy
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]
