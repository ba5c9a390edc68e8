"""Append-only tables: rows are inserted, never changed or deleted.

Two guards: the model refuses `save()` of an existing row and `delete()`, and a
PostgreSQL trigger refuses UPDATE and DELETE from any client (a raw SQL session, another
service). TRUNCATE is left alone on purpose: it is how test databases are reset, and an
operator purging a ledger on purpose needs the table owner's rights anyway.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models


class AppendOnlyError(RuntimeError):
    pass


class AppendOnlyModel(models.Model):
    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only")


_FUNCTION = """
CREATE OR REPLACE FUNCTION switchboard_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
"""


def append_only_trigger(table: str) -> migrations.RunSQL:
    """The migration operation that makes `table` refuse UPDATE and DELETE."""
    trigger = f"{table}_append_only"
    return migrations.RunSQL(
        sql=[
            _FUNCTION,
            f"DROP TRIGGER IF EXISTS {trigger} ON {table};",
            f"CREATE TRIGGER {trigger} BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION switchboard_refuse_change();",
        ],
        reverse_sql=[f"DROP TRIGGER IF EXISTS {trigger} ON {table};"],
    )
