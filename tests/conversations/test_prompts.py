from __future__ import annotations

from switchboard.conversations.prompts import build_chat_messages


def test_prompt_is_system_then_history_then_the_new_turn():
    messages = build_chat_messages(
        system_prompt="Be brief.",
        history=[("in", "hi"), ("out", "hello!")],
        user_text="how are you?",
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello!"},
        {"role": "user", "content": "how are you?"},
    ]


def test_braces_in_prompts_and_messages_are_text_not_template_syntax():
    messages = build_chat_messages(
        system_prompt='Reply as JSON like {"answer": ...} for {user}',
        history=[],
        user_text="{input} {{x}}",
    )
    assert messages[0]["content"] == 'Reply as JSON like {"answer": ...} for {user}'
    assert messages[-1]["content"] == "{input} {{x}}"
