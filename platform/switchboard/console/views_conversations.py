"""Conversations: find them (end user, bot, dates, text) and read their transcripts with
each message's status, usage and timings."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.db.models import Count, Exists, OuterRef, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from switchboard.bots.models import Bot, Connector
from switchboard.console.access import Access, console_view
from switchboard.console.consumers import console_conversation_key
from switchboard.conversations.models import Conversation, Message

PAGE_SIZE = 50
TRANSCRIPT_PAGE_SIZE = 200


class ConversationSearch(forms.Form):
    user = forms.CharField(
        label=_("End user"),
        required=False,
        max_length=200,
        # Part of the id is enough: channels' ids are long and opaque.
        widget=forms.TextInput(attrs={"placeholder": _("External id, or part of it")}),
    )
    bot = forms.ModelChoiceField(label=_("Bot"), queryset=Bot.objects.none(), required=False)
    since = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    q = forms.CharField(
        label=_("Text"),
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": _("Words in a message")}),
    )

    def __init__(self, *args: Any, bots: QuerySet[Bot], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bot_field = self.fields["bot"]
        assert isinstance(bot_field, forms.ModelChoiceField)
        bot_field.queryset = bots
        bot_field.empty_label = _("All bots")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", _("The end date is before the start date."))
        return data


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _search(access: Access, data: dict[str, Any]) -> QuerySet[Conversation]:
    conversations = access.scope(Conversation.objects.all())
    if data.get("user"):
        conversations = conversations.filter(end_user__external_id__icontains=data["user"])
    if data.get("bot"):
        conversations = conversations.filter(bot=data["bot"])
    since, until, text = data.get("since"), data.get("until"), data.get("q")
    if since or until or text:
        # A conversation matches when one of its messages does, all conditions at once:
        # "said X between these dates", not "said X once, and was active then".
        messages = Message.objects.filter(conversation=OuterRef("pk"))
        if since:
            messages = messages.filter(created_at__gte=_day_start(since))
        if until:
            messages = messages.filter(created_at__lt=_day_start(until + timedelta(days=1)))
        if text:
            messages = messages.filter(text__icontains=text)
        conversations = conversations.filter(Exists(messages))
    return conversations


@console_view()
def conversation_list(request: HttpRequest) -> HttpResponse:
    access: Access = request.access  # type: ignore[attr-defined]
    bots = access.scope(Bot.objects.all()).order_by("name")
    form = ConversationSearch(request.GET or None, bots=bots)
    data: dict[str, Any] = {}
    if form.is_bound:
        # Valid fields filter even when another is wrong; the wrong one shows its error.
        form.is_valid()
        data = form.cleaned_data
    conversations = (
        _search(access, data)
        .select_related("bot", "connector", "end_user", "tenant")
        .order_by("-last_message_at", "-pk")
    )
    page = Paginator(conversations, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    # Counted for the page only: a count over every conversation would be the slow part.
    counts = dict(
        Message.objects.filter(conversation_id__in=[c.pk for c in rows])
        .values("conversation_id")
        .annotate(n=Count("id"))
        .values_list("conversation_id", "n")
    )
    for conversation in rows:
        conversation.message_count = counts.get(conversation.pk, 0)  # type: ignore[attr-defined]
    context = {
        "form": form,
        "page": page,
        "conversations": rows,
        "show_tenant": access.tenant is None,
        "filtered": any(data.get(name) for name in ("user", "bot", "since", "until", "q")),
    }
    return render(request, "console/conversations/list.html", context)


@console_view()
def conversation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    access: Access = request.access  # type: ignore[attr-defined]
    conversation = access.get_or_404(
        Conversation.objects.select_related("bot", "connector", "end_user", "tenant"), pk=pk
    )
    messages = (
        access.scope(Message.objects.filter(conversation=conversation))
        .select_related("endpoint")
        # An inbound message and its canned reply can share a timestamp: question first.
        .order_by("created_at", "direction")
    )
    page = Paginator(messages, TRANSCRIPT_PAGE_SIZE).get_page(request.GET.get("page"))
    totals = messages.filter(direction=Message.Direction.OUTBOUND).aggregate(
        replies=Count("pk"),
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
    )
    chat_url = ""
    if conversation.connector.kind == Connector.Kind.CONSOLE and access.can_edit:
        # The user's own test conversation: offer to carry on in the test chat.
        prefix = console_conversation_key(request.user.pk, "")
        if conversation.external_key.startswith(prefix):
            token = conversation.external_key[len(prefix) :]
            chat_url = f"?bot={conversation.bot_id}&c={token}"
    context = {
        "conversation": conversation,
        "page": page,
        "messages_page": list(page.object_list),
        "totals": totals,
        "chat_query": chat_url,
    }
    return render(request, "console/conversations/detail.html", context)
