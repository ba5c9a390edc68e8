"""Deterministic stand-in tokenisation for the simulator.

Counts are approximate and do NOT come from Qwen's tokenizer: text is split into ChatML
special tokens, whitespace-prefixed words, single punctuation marks and leftover
whitespace. That is close enough in spirit (roughly one token per word) to exercise
context limits, truncation and usage accounting, and it needs no model files. The pieces
of a text always concatenate back to exactly that text, so streamed output matches the
non-streamed reply character for character.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

_TOKEN_RE = re.compile(
    r"<\|im_start\|>|<\|im_end\|>"  # ChatML markers count as one token each, as in Qwen
    r"|\s+(?=<\|im_(?:start|end)\|>)"  # so whitespace is never glued onto a marker
    r"|\s*\w+"  # a word with the whitespace before it
    r"|\s*[^\w\s]"  # one punctuation character with the whitespace before it
    r"|\s+"  # whitespace at the end of the text
)


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def render_chatml(messages: Iterable[Mapping[str, str]]) -> str:
    """Render messages as Qwen's chat template would, including the generation prompt."""
    parts = [f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages]
    parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def count_prompt_tokens(messages: Iterable[Mapping[str, str]]) -> int:
    return len(tokenize(render_chatml(messages)))


def simulated_reply(model: str, name: str, messages: Iterable[Mapping[str, str]]) -> str:
    last_user = ""
    for message in messages:
        if message["role"] == "user":
            last_user = message["content"]
    return f"[simulated {model} @ {name}] You said: {last_user}"
