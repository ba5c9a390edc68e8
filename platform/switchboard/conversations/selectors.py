from __future__ import annotations

from switchboard.conversations.models import Message

_HISTORY_STATUSES = [
    Message.Status.REPLIED,
    Message.Status.PENDING,
    Message.Status.DELIVERED,
    Message.Status.UNDELIVERABLE,
]


def conversation_history(*, message: Message, limit: int) -> list[tuple[str, str]]:
    """The `limit` messages before `message` that belong in its prompt, oldest first."""
    if limit <= 0:
        return []
    rows = (
        Message.objects.for_tenant(message.tenant_id)
        .filter(
            conversation_id=message.conversation_id,
            created_at__lt=message.created_at,
            status__in=_HISTORY_STATUSES,
        )
        .order_by("-created_at")
        .values_list("direction", "text")[:limit]
    )
    return list(reversed(list(rows)))
