"""A Tmall Genie speaker hears the refusal in the bot's language, at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from connectors.base import InboundMessage

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_new_speaker_beyond_the_mau_limit_hears_the_refusal(
    tenant: Any, bot: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.bots.services import connector_create_aligenie
    from switchboard.conversations.voice import voice_turn
    from switchboard.licensing.replies import DEFAULTS

    licence_for(tenant, mau_limit=0)
    connector = connector_create_aligenie(bot=bot, name="Speaker", skill_id=1)
    started = time.monotonic()
    answer = voice_turn(
        connector=connector,
        inbound=InboundMessage(
            channel="aligenie",
            provider_message_id=uuid.uuid4().hex,
            user_id="speaker-1",
            conversation_key="session-1",
            text="你好",
        ),
        intent_id=7,
        deadline=started + 5.0,
    )
    spoken = str(answer)
    assert DEFAULTS["mau_limit"]["zh-hans"] in spoken
    # The refusal itself, not "still thinking" after the speaker's budget ran out.
    assert bot.voice_pending_reply not in spoken
