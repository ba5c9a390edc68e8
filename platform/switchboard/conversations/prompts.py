"""Prompt assembly with langchain-core: the bot's system prompt, trimmed history, the turn.

A reply is the pipeline `REPLY_PROMPT | PoolChatModel(...)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_openai_messages
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

# The system prompt is passed as a variable, never spliced into the template, so braces
# in a tenant's prompt are text rather than template syntax.
REPLY_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "{system_prompt}"),
        MessagesPlaceholder("history"),
        ("human", "{input}"),
    ]
)


def prompt_inputs(
    *, system_prompt: str, history: Sequence[tuple[str, str]], user_text: str
) -> dict[str, Any]:
    """Template variables; `history` is (direction, text) pairs, oldest first."""
    past: list[BaseMessage] = [
        HumanMessage(text) if direction == "in" else AIMessage(text) for direction, text in history
    ]
    return {"system_prompt": system_prompt, "history": past, "input": user_text}


def build_chat_messages(
    *, system_prompt: str, history: Sequence[tuple[str, str]], user_text: str
) -> list[dict[str, str]]:
    """The OpenAI-style messages the model will see (for previews and tests)."""
    value = REPLY_PROMPT.invoke(
        prompt_inputs(system_prompt=system_prompt, history=history, user_text=user_text)
    )
    return [
        {"role": str(m["role"]), "content": str(m["content"])}
        for m in convert_to_openai_messages(value.to_messages())
    ]
