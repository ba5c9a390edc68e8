"""The v1 ResultModel reply (PROTOCOLS.md §D.1 "Response") and speakable text for it.

AliGenie answers synchronously: the skill's HTTP response body is the reply, spoken by
the speaker's TTS. The builders return exactly the documented JSON, nothing extra.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any


def _model(
    reply: str, *, result_type: str, execute_code: str, asked: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "returnCode": "0",
        "returnErrorSolution": "",
        "returnMessage": "",
        "returnValue": {
            "reply": reply,
            "resultType": result_type,
            "executeCode": execute_code,
            "askedInfos": asked,
            "properties": {},
            "actions": [],
        },
    }


def result(reply: str) -> dict[str, Any]:
    """A final answer: `RESULT` closes the microphone."""
    return _model(reply, result_type="RESULT", execute_code="SUCCESS", asked=[])


def ask(reply: str, *, intent_id: int | None, parameter_name: str = "question") -> dict[str, Any]:
    """A question back to the user: `ASK_INF` opens the microphone for the answer.

    The platform wants the request's `intentId` in `askedInfos`; with none known it gets
    `null` rather than an invented id (how the platform treats that is UNKNOWN).
    """
    return _model(
        reply,
        result_type="ASK_INF",
        execute_code="SUCCESS",
        asked=[{"parameterName": parameter_name, "intentId": intent_id}],
    )


def failure(reply: str) -> dict[str, Any]:
    """A spoken apology when we could not produce an answer.

    `executeCode` `EXECUTE_ERROR` is the enum's "the skill's own code failed". `returnCode`
    stays "0": the call itself was answered, and whether the speaker still speaks `reply`
    under a non-zero returnCode is UNKNOWN, while the apology must be heard.
    """
    return _model(reply, result_type="RESULT", execute_code="EXECUTE_ERROR", asked=[])


# --- speakable text -------------------------------------------------------------------

_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_HAS_CJK = re.compile(f"[{_CJK}]")
_WHITESPACE = re.compile(r"\s+")
_CJK_GAP = re.compile(f"(?<=[{_CJK}]) +(?=[{_CJK}])")
_SPACE_BEFORE_MARK = re.compile(r" +([.,!?;:\u3002\uff01\uff1f\uff0c\u3001\uff1b\uff1a])")
# Full stop, exclamation and question marks, CJK (fullwidth) and Latin, and the ellipsis.
_SENTENCE_END = "\u3002\uff01\uff1f!?\u2026"
_CLAUSE_END = "\uff0c\u3001\uff1b\uff1a,;:"
# Closing quotes and brackets that stay with the sentence they close.
_CLOSERS = "\"'\u201d\u2019\uff09)\u300d\u300f\u3011"
_ANY_END = _SENTENCE_END + _CLAUSE_END + "."

_FENCE = re.compile(r"^\s*(```|~~~)")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(\s+#+)?\s*$")
_QUOTE = re.compile(r"^\s*(>\s?)+")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+(\[[ xX]\]\s+)?")
_INLINE = (
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # image: alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # link: its text
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # reference link
    (re.compile(r"\[\^[^\]]+\]"), ""),  # footnote marker
    (re.compile(r"<https?://[^>\s]+>"), ""),  # autolink: a URL is noise when spoken
    (re.compile(r"</?[A-Za-z][^<>]*>"), " "),  # inline HTML tag
    (re.compile(r"(`+)(.+?)\1"), r"\2"),  # inline code
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # strong
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), r"\1"),  # strikethrough
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # emphasis
    (re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"), r"\1"),  # emphasis
    (re.compile(r"\*{2,}|_{2,}"), ""),  # unpaired leftovers
    (re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])"), r"\1"),  # backslash escapes
)
# Pictographs, dingbats, flags, skin tones, variation selectors, ZWJ, keycaps, tags:
# TTS reads them as names or noise, so they are dropped.
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0e\ufe0f\u200d\u20e3\U000e0020-\U000e007f]"
)


def voice_text(text: str, *, max_chars: int) -> str:
    """Model output → plain text a speaker can read, at most `max_chars` characters.

    Markdown is reduced to its words (headings, emphasis, code fences and inline code,
    links → link text, images → alt text, list bullets, quotes, tables, rules), emoji are
    dropped, whitespace is collapsed (and removed between CJK characters, where a line
    break is not a word gap). Headings, list items, table rows and paragraph ends get a
    full stop when they have no punctuation, so they do not run together aloud.

    Too long a text is cut after the last sentence end that fits (a CJK or Latin full stop,
    "!", "?" or an ellipsis; a Latin "." only before a space or closing quote); failing
    that, at a clause or word boundary, marked with "…". The cut never separates a
    character from its combining marks.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    spoken = " ".join(_plain_segments(_EMOJI.sub("", text)))
    spoken = _CJK_GAP.sub("", _WHITESPACE.sub(" ", spoken))
    # Removed markup (an autolink, an emoji) can leave a space before punctuation.
    spoken = _SPACE_BEFORE_MARK.sub(r"\1", spoken).strip()
    return _cut(spoken, max_chars)


def _plain_segments(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    segments: list[str] = []
    paragraph: list[str] = []

    def close_paragraph() -> None:
        if paragraph:
            segments.append(_terminated(" ".join(paragraph)))
            paragraph.clear()

    in_fence = False
    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
            close_paragraph()
            continue
        if in_fence:
            # Code is spoken as its text; each line is a unit of its own.
            if line.strip():
                segments.append(_terminated(line.strip()))
            continue
        if not line.strip() or _RULE.match(line):
            close_paragraph()
            continue
        if _TABLE_SEPARATOR.match(line):
            continue
        standalone = False
        heading = _HEADING.match(line)
        if heading:
            line, standalone = heading.group(1), True
        line = _QUOTE.sub("", line)
        bullet = _BULLET.match(line)
        if bullet:
            line, standalone = line[bullet.end() :], True
        if line.strip().startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            joiner = "\uff0c" if _HAS_CJK.search(line) else ", "
            line, standalone = joiner.join(c for c in cells if c), True
        for pattern, replacement in _INLINE:
            line = pattern.sub(replacement, line)
        line = line.strip()
        if not line:
            continue
        if standalone:
            close_paragraph()
            segments.append(_terminated(line))
        else:
            paragraph.append(line)
    close_paragraph()
    return segments


def _terminated(segment: str) -> str:
    segment = segment.strip()
    core = segment.rstrip(_CLOSERS)
    if not core or core[-1] in _ANY_END:
        return segment
    return segment + ("。" if _HAS_CJK.search(segment) else ".")


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    # Sentence ends that fit whole: end index (exclusive) after any closing quotes.
    sentence_ends: list[int] = []
    for i in range(min(len(text), max_chars)):
        if not _ends_sentence(text, i):
            continue
        end = i + 1
        while end < len(text) and text[end] in _CLOSERS:
            end += 1
        if end <= max_chars:
            sentence_ends.append(end)
    # Clause or word boundaries, leaving room for the "…".
    breaks = [i for i in range(1, max_chars) if text[i] in _CLAUSE_END or text[i].isspace()]
    enough = max_chars // 3
    if sentence_ends and sentence_ends[-1] >= enough:
        return text[: sentence_ends[-1]].rstrip()
    if breaks and breaks[-1] >= enough:
        return _ellipsis(text[: breaks[-1]])
    if sentence_ends:
        return text[: sentence_ends[-1]].rstrip()
    if breaks:
        return _ellipsis(text[: breaks[-1]])
    cut = max_chars - 1
    while cut > 0 and _joins_previous(text[cut]):
        cut -= 1
    return _ellipsis(text[:cut])


def _ends_sentence(text: str, i: int) -> bool:
    after = text[i + 1] if i + 1 < len(text) else " "
    if text[i] in _SENTENCE_END:
        # Only the last mark of a run such as "?!" or "……" ends the sentence.
        return after not in _SENTENCE_END
    # A Latin full stop counts before a space or a closing quote, so "3.5" and "a.b" don't.
    return text[i] == "." and i > 0 and (after.isspace() or after in _CLOSERS)


def _ellipsis(head: str) -> str:
    return head.rstrip().rstrip(_CLAUSE_END).rstrip() + "…"


def _joins_previous(ch: str) -> bool:
    # Combining marks and joiners belong to the character before them.
    return unicodedata.combining(ch) != 0 or unicodedata.category(ch) in ("Mn", "Me", "Cf")
