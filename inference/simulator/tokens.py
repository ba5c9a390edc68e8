"""Deterministic stand-in tokenisation for the simulator.

Counts are approximate and do NOT come from Qwen's tokenizer: text is split into ChatML
special tokens, whitespace-prefixed words, single punctuation marks and leftover
whitespace. That is close enough in spirit (roughly one token per word) to exercise
context limits, truncation and usage accounting, and it needs no model files. The pieces
of a text always concatenate back to exactly that text, so streamed output matches the
non-streamed reply character for character.

ChatML's structural newlines (after a role name and after ``<|im_end|>``) are tokens of
their own, as in Qwen, so an assistant reply quoted in a later prompt tokenises exactly as
it did when it was generated and its KV blocks can be found in the prefix cache.

Token ids are stable hashes of the pieces, so equal text always maps to equal ids: that
is all the prefix cache (which hashes ids, as vLLM does) and `/tokenize` need.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# Qwen's own ids for its special tokens; ordinary pieces hash into the range below them.
_SPECIAL_IDS = {"<|endoftext|>": 151643, IM_START: 151644, IM_END: 151645}
_ORDINARY_VOCAB = 151643

_TOKEN_RE = re.compile(
    r"<\|im_start\|>|<\|im_end\|>"  # ChatML markers count as one token each, as in Qwen
    r"|\s+(?=<\|im_(?:start|end)\|>)"  # so whitespace is never glued onto a marker
    r"|\s*\w+"  # a word with the whitespace before it
    r"|\s*[^\w\s]"  # one punctuation character with the whitespace before it
    r"|\s+"  # whitespace at the end of the text
)


# A role header with its newline, or an end marker with the newline after it.
_STRUCTURE_RE = re.compile(r"(<\|im_start\|>[^\s<]*\n|<\|im_end\|>\n)")


def tokenize(text: str) -> list[str]:
    pieces: list[str] = []
    for index, part in enumerate(_STRUCTURE_RE.split(text)):
        if index % 2 == 0:
            pieces.extend(_TOKEN_RE.findall(part))
        elif part.startswith(IM_START):
            role = part[len(IM_START) : -1]
            pieces.extend([IM_START, *([role] if role else []), "\n"])
        else:
            pieces.extend([IM_END, "\n"])
    return pieces


def token_id(piece: str) -> int:
    special = _SPECIAL_IDS.get(piece)
    if special is not None:
        return special
    digest = hashlib.blake2b(piece.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _ORDINARY_VOCAB


def encode(pieces: Iterable[str]) -> list[int]:
    return [token_id(piece) for piece in pieces]


def render_chatml(
    messages: Iterable[Mapping[str, str]], *, add_generation_prompt: bool = True
) -> str:
    """Render messages as Qwen's chat template would, by default with the generation prompt."""
    parts = [f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages]
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def count_prompt_tokens(messages: Iterable[Mapping[str, str]]) -> int:
    return len(tokenize(render_chatml(messages)))
