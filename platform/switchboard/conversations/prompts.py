"""Prompt assembly with langchain-core: the bot's system prompt, trimmed history, the turn."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_openai_messages
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

# The system prompt is passed as a variable, never spliced into the template, so braces
# in a tenant's prompt are text rather than template syntax.
_TEMPLATE = ChatPromptTemplate.from_messages(
    [
        ("system", "{system_prompt}"),
        MessagesPlaceholder("history"),
        ("human", "{input}"),
    ]
)


def build_chat_messages(
    *, system_prompt: str, history: Sequence[tuple[str, str]], user_text: str
) -> list[dict[str, str]]:
    """OpenAI-style messages; `history` is (direction, text) pairs, oldest first."""
    past: list[BaseMessage] = [
        HumanMessage(text) if direction == "in" else AIMessage(text) for direction, text in history
    ]
    value = _TEMPLATE.invoke({"system_prompt": system_prompt, "history": past, "input": user_text})
    return [
        {"role": str(m["role"]), "content": str(m["content"])}
        for m in convert_to_openai_messages(value.to_messages())
    ]
