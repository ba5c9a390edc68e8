"""Splitting long replies into DingTalk-sized messages, on UTF-8 byte limits.

Limits (PROTOCOLS.md §B.6, §C):
- OpenAPI `msgParam` (the JSON string) for group sends: at most 15 000 bytes. DOCUMENTED.
- OpenAPI 1:1 `batchSend` `msgParam`: no documented limit. We apply the same 15 000 bytes
  because both endpoints take the same `msgParam` shapes. INFERRED.
- Session-webhook `text.content` / `markdown.text`: UNKNOWN (a 20 000 byte figure circulates
  but could not be verified). We use 4 000 bytes: OUR SAFE CHOICE, well below anything
  reported, and it keeps each chat bubble readable.
"""

from __future__ import annotations

import re

SESSION_WEBHOOK_MAX_BYTES = 4_000
OPENAPI_MSGPARAM_MAX_BYTES = 15_000

# Longest UTF-8 encoding of one code point; a smaller limit could not make progress.
_MIN_LIMIT = 4

# Preferred break points, best first. Each pattern's match end is where the cut goes, so
# the separator stays with the earlier part and joining the parts restores the text.
# Only line breaks are consumed across lines: the next part keeps its indentation, which
# matters in markdown (code blocks, nested lists).
_BREAKS = (
    re.compile(r"\n(?:[^\S\n]*\n)+"),  # paragraph: a blank line or more
    re.compile(r"\n"),  # line
    # sentence: CJK full stop/!/?/; (no space follows them), or Latin .!?; before a space
    re.compile(r"(?:[\u3002\uff01\uff1f\uff1b]|[.!?;](?=\s))[\"'\u201d\u2019\uff09)]*[^\S\n]*"),
    # clause: CJK and Latin commas and colons, the ideographic comma; then any whitespace
    re.compile(r"[\uff0c\u3001,:\uff1a][^\S\n]*|[^\S\n]+"),
)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def split_message(text: str, *, limit_bytes: int) -> list[str]:
    """Split `text` into parts of at most `limit_bytes` UTF-8 bytes each.

    Cuts at the best boundary available (paragraph, line, sentence, clause, whitespace) in
    the second half of each window, else at a character boundary; never inside a code
    point. `"".join(parts) == text`, so callers may strip parts for display and still know
    how much of the text each part covers. An empty text gives `[]`. Lone surrogates
    cannot be encoded and raise `UnicodeEncodeError` (a `ValueError`).
    """
    if limit_bytes < _MIN_LIMIT:
        raise ValueError(f"limit_bytes must be at least {_MIN_LIMIT}, got {limit_bytes}")
    parts: list[str] = []
    start = 0
    while start < len(text):
        # A character is at least one byte, so `limit_bytes` characters always cover the
        # window; encoding only that much keeps long texts linear.
        chunk = text[start : start + limit_bytes]
        encoded = chunk.encode("utf-8")
        if len(encoded) <= limit_bytes and start + len(chunk) == len(text):
            parts.append(chunk)
            break
        # Cutting the bytes may split the last code point; "ignore" drops just that tail,
        # because everything before the cut is valid UTF-8.
        window = encoded[:limit_bytes].decode("utf-8", "ignore")
        cut = _best_cut(window)
        parts.append(text[start : start + cut])
        start += cut
    return parts


def _best_cut(window: str) -> int:
    # A break in the first half would leave a stub part and double the message count.
    floor = len(window) // 2
    for pattern in _BREAKS:
        best = 0
        for match in pattern.finditer(window):
            if match.end() > floor:
                best = match.end()
        if best:
            return best
    return len(window)
