from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from switchboard.conversations.models import Conversation, Message
from switchboard.tenants.models import Tenant

# Work still in flight: a message waiting for a reply or for its delivery. Its
# conversation stays, however old, until that work ends.
OPEN_STATUSES = (Message.Status.RECEIVED, Message.Status.PROCESSING, Message.Status.PENDING)


@dataclass(frozen=True)
class Policy:
    days: int  # 0: keep forever
    source: str


def _tenant_overrides() -> dict[str, int]:
    overrides: dict[str, int] = {}
    for item in settings.SWITCHBOARD_RETENTION_DAYS_BY_TENANT:
        slug, sep, days = item.partition("=")
        if not sep or not slug.strip() or not days.strip().isdigit():
            raise CommandError(
                f"SWITCHBOARD_RETENTION_DAYS_BY_TENANT: {item!r} is not slug=days "
                "(days a whole number, 0 to keep forever)"
            )
        overrides[slug.strip()] = int(days)
    return overrides


def prunable(tenant: Tenant, cutoff: datetime) -> QuerySet[Conversation]:
    """The tenant's conversations with no message at or after `cutoff` and no open work."""
    recent = Message.objects.filter(conversation=OuterRef("pk")).filter(
        Q(created_at__gte=cutoff) | Q(status__in=OPEN_STATUSES)
    )
    return (
        Conversation.objects.for_tenant(tenant)
        .filter(last_message_at__lt=cutoff)
        .exclude(Exists(recent))
    )


class Command(BaseCommand):
    help = (
        "Delete conversations (and their messages and delivery logs) idle for longer than "
        "the retention period: SWITCHBOARD_RETENTION_DAYS, per tenant "
        "SWITCHBOARD_RETENTION_DAYS_BY_TENANT, or --days. The usage ledger, rollups, MAU "
        "records and end users are never deleted, so billing and licence counts stay "
        "exact. Run it daily (cron, or a scheduled job)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            help="Retention in days for every tenant selected, instead of the settings.",
        )
        parser.add_argument("--tenant", help="Only this tenant (slug).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Conversations deleted per transaction (short transactions keep locks "
            "short on a live database).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["days"] is not None and options["days"] < 1:
            raise CommandError("--days must be at least 1")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        overrides = _tenant_overrides()
        tenants = Tenant.objects.order_by("slug")
        if options["tenant"]:
            tenants = tenants.filter(slug=options["tenant"])
            if not tenants.exists():
                raise CommandError(f"no tenant with slug {options['tenant']!r}")
        unknown = sorted(set(overrides) - set(Tenant.objects.values_list("slug", flat=True)))
        if unknown:
            self.stderr.write(f"retention set for unknown tenant(s): {', '.join(unknown)}")
        now = timezone.now()
        total_conversations = total_messages = 0
        for tenant in tenants:
            policy = self._policy(tenant, options["days"], overrides)
            if policy.days == 0:
                self.stdout.write(f"{tenant.slug}: kept forever ({policy.source})")
                continue
            cutoff = now - timedelta(days=policy.days)
            if options["dry_run"]:
                conversations, messages = self._count(tenant, cutoff)
            else:
                conversations, messages = self._delete(tenant, cutoff, options["batch_size"])
            total_conversations += conversations
            total_messages += messages
            verb = "would delete" if options["dry_run"] else "deleted"
            self.stdout.write(
                f"{tenant.slug}: {verb} {conversations} conversation(s), {messages} "
                f"message(s) idle since before {cutoff:%Y-%m-%d %H:%M} UTC "
                f"({policy.days} days, {policy.source})"
            )
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(
            f"in all: {verb} {total_conversations} conversation(s), {total_messages} message(s)"
        )

    def _policy(self, tenant: Tenant, days: int | None, overrides: dict[str, int]) -> Policy:
        if days is not None:
            return Policy(days, "--days")
        if tenant.slug in overrides:
            return Policy(overrides[tenant.slug], "SWITCHBOARD_RETENTION_DAYS_BY_TENANT")
        return Policy(settings.SWITCHBOARD_RETENTION_DAYS, "SWITCHBOARD_RETENTION_DAYS")

    def _count(self, tenant: Tenant, cutoff: datetime) -> tuple[int, int]:
        conversations = prunable(tenant, cutoff)
        messages = Message.objects.filter(conversation__in=conversations.values("pk"))
        return conversations.count(), messages.count()

    def _delete(self, tenant: Tenant, cutoff: datetime, batch_size: int) -> tuple[int, int]:
        conversations = messages = 0
        while True:
            with transaction.atomic():
                # Re-checked inside the transaction, with the rows locked: a message
                # arriving meanwhile keeps its conversation.
                ids = list(
                    prunable(tenant, cutoff)
                    .select_for_update(skip_locked=True)
                    .values_list("pk", flat=True)[:batch_size]
                )
                if not ids:
                    return conversations, messages
                _, deleted = Conversation.objects.filter(pk__in=ids).delete()
            conversations += deleted.get(Conversation._meta.label, 0)
            messages += deleted.get(Message._meta.label, 0)
