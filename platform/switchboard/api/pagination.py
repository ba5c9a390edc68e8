from __future__ import annotations

from rest_framework.pagination import CursorPagination


class Cursor(CursorPagination):
    """Newest first, by an opaque cursor: stable while rows are added, and cheap on big
    tables (no OFFSET)."""

    ordering = "-created_at"
    page_size_query_param = "page_size"
    max_page_size = 200
