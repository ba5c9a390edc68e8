"""`split_message`: byte limits, whole characters, order, and sensible break points."""

# Chinese punctuation and verbatim DingTalk examples are the point of these tests.

from __future__ import annotations

import random

import pytest

from connectors.dingtalk import split_message

# 1-, 2-, 3- and 4-byte characters, and every kind of break point.
ALPHABET = ["a", "b", " ", "\n", "\n\n", ".", "。", "é", "ß", "你", "好", "，", "😀", "👍🏽", "!"]


def _random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


@pytest.mark.parametrize("seed", range(40))
def test_random_texts_respect_the_limit_and_round_trip(seed):
    rng = random.Random(seed)
    text = _random_text(rng, rng.randint(0, 3000))
    limit = rng.choice([4, 5, 7, 16, 100, 999, 4000])
    parts = split_message(text, limit_bytes=limit)
    assert "".join(parts) == text  # order preserved, nothing lost or added
    for part in parts:
        encoded = part.encode("utf-8")
        assert 0 < len(encoded) <= limit
        assert encoded.decode("utf-8") == part  # whole characters only


def test_short_text_is_one_part_and_empty_is_none():
    assert split_message("你好", limit_bytes=6) == ["你好"]
    assert split_message("", limit_bytes=10) == []


def test_limit_is_in_bytes_not_characters():
    parts = split_message("你" * 10, limit_bytes=10)  # 3 bytes each
    assert parts == ["你" * 3, "你" * 3, "你" * 3, "你"]


def test_a_four_byte_character_is_never_cut():
    parts = split_message("a😀b", limit_bytes=4)
    assert parts == ["a", "😀", "b"]


def test_too_small_a_limit_is_refused():
    with pytest.raises(ValueError, match="at least 4"):
        split_message("abc", limit_bytes=3)


def test_prefers_paragraph_breaks():
    para1 = "First paragraph. It has two sentences.\n"
    para2 = "Second one is here.\n"
    text = para1 + "\n" + para2
    parts = split_message(text, limit_bytes=len(para1) + 10)
    assert parts == [para1 + "\n", para2]


def test_falls_back_to_lines_then_sentences_then_spaces():
    lines = "line one is long\nline two is long\n"
    assert split_message(lines, limit_bytes=20) == ["line one is long\n", "line two is long\n"]
    sentences = "这是第一句。这是第二句。"
    assert split_message(sentences, limit_bytes=20) == ["这是第一句。", "这是第二句。"]
    latin = "Short one. Another sentence here"
    assert split_message(latin, limit_bytes=20) == ["Short one. ", "Another sentence ", "here"]


def test_next_part_keeps_its_indentation():
    text = "Intro text that is long enough.\n\n    indented code line\n"
    parts = split_message(text, limit_bytes=40)
    assert parts[0] == "Intro text that is long enough.\n\n"
    assert parts[1].startswith("    indented")


def test_an_early_break_is_not_taken_when_it_would_leave_a_stub():
    text = "a\n" + "b" * 100
    parts = split_message(text, limit_bytes=50)
    # Cutting at the newline would leave a 2-byte first part.
    assert len(parts[0].encode()) == 50 and "".join(parts) == text


def test_lone_surrogates_are_refused():
    with pytest.raises(UnicodeEncodeError):
        split_message("a\ud800" * 10, limit_bytes=5)
