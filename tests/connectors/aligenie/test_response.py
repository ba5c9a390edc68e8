"""ResultModel builders (PROTOCOLS.md §D.1 "Response") and speakable text."""

# Chinese punctuation is what these tests are about, not a confusable typo.

from __future__ import annotations

import json
import unicodedata

import pytest

from connectors.aligenie import ask, failure, result, voice_text


def test_result_is_exactly_the_documented_json():
    assert result("好的，东坡肉的做法是……") == json.loads(
        '{"returnCode":"0","returnErrorSolution":"","returnMessage":"",'
        '"returnValue":{"reply":"好的，东坡肉的做法是……","resultType":"RESULT",'
        '"executeCode":"SUCCESS","askedInfos":[],"properties":{},"actions":[]}}'
    )


def test_ask_opens_the_mic_for_the_request_intent():
    assert ask("你想去哪个城市？", intent_id=17063, parameter_name="city") == {
        "returnCode": "0",
        "returnErrorSolution": "",
        "returnMessage": "",
        "returnValue": {
            "reply": "你想去哪个城市？",
            "resultType": "ASK_INF",
            "executeCode": "SUCCESS",
            "askedInfos": [{"parameterName": "city", "intentId": 17063}],
            "properties": {},
            "actions": [],
        },
    }
    default = ask("还有什么问题？", intent_id=None)["returnValue"]["askedInfos"]
    assert default == [{"parameterName": "question", "intentId": None}]


def test_failure_is_a_spoken_apology():
    body = failure("抱歉，我暂时无法回答。")
    assert body["returnCode"] == "0"
    assert body["returnValue"] == {
        "reply": "抱歉，我暂时无法回答。",
        "resultType": "RESULT",
        "executeCode": "EXECUTE_ERROR",
        "askedInfos": [],
        "properties": {},
        "actions": [],
    }


def test_builders_return_fresh_objects():
    first = result("a")
    first["returnValue"]["properties"]["x"] = 1
    assert result("a")["returnValue"]["properties"] == {}


# --- voice_text ------------------------------------------------------------------------


def test_markdown_is_reduced_to_words():
    text = (
        "# 东坡肉做法\n\n"
        "**材料**：五花肉、*酱油*、`冰糖`\n\n"
        "1. 切块\n"
        "2. 焯水\n"
        "- 详见[菜谱](https://example.com/recipe)\n\n"
        "```text\n小火慢炖\n```\n"
        "> 注意火候\n\n"
        "---\n"
        "| 步骤 | 时间 |\n|---|---|\n| 炖 | 2小时 |\n"
    )
    assert voice_text(text, max_chars=500) == (
        "东坡肉做法。材料：五花肉、酱油、冰糖。切块。焯水。详见菜谱。小火慢炖。注意火候。"
        "步骤，时间。炖，2小时。"
    )


def test_english_markdown():
    text = (
        "## Steps\n\nThis is **very** _important_: keep snake_case_names as they are.\n"
        "See <https://example.com> and ![a diagram](d.png)\n\n* first\n* second item"
    )
    assert voice_text(text, max_chars=500) == (
        "Steps. This is very important: keep snake_case_names as they are. "
        "See and a diagram. first. second item."
    )


def test_whitespace_is_collapsed_and_cjk_lines_join():
    assert voice_text("  你好\n  世界 \t 再见  ", max_chars=100) == "你好世界再见。"
    assert voice_text("hello\n   world", max_chars=100) == "hello world."


def test_short_text_is_untouched():
    assert voice_text("好的。", max_chars=3) == "好的。"


def test_long_chinese_is_cut_after_the_last_whole_sentence():
    sentence = "东坡肉是杭州的名菜，肥而不腻。"  # 15 characters
    text = sentence * 20
    out = voice_text(text, max_chars=100)
    assert out == sentence * 6
    assert len(out) <= 100


def test_long_chinese_question_and_exclamation_marks_end_sentences():
    out = voice_text("你知道吗？" + "真的很好吃！" * 10 + "还有更多", max_chars=20)
    assert out == "你知道吗？真的很好吃！真的很好吃！"


def test_long_english_is_cut_at_a_sentence_end_not_a_decimal_point():
    text = "Version 3.5 is out. It is faster. " + "Much more text follows here. " * 20
    out = voice_text(text, max_chars=40)
    assert out == "Version 3.5 is out. It is faster."
    out = voice_text("It costs 3.5 dollars and then some more words go on", max_chars=20)
    assert out == "It costs 3.5…"


def test_closing_quotes_stay_with_their_sentence():
    text = "他说：“今天很好。”然后走了，" + "再" * 50
    assert voice_text(text, max_chars=20) == "他说：“今天很好。”"


def test_without_a_sentence_end_the_cut_is_at_a_clause_or_word_with_an_ellipsis():
    assert voice_text("甲乙丙丁，戊己庚辛，壬癸子丑寅卯辰巳", max_chars=12) == "甲乙丙丁，戊己庚辛…"
    assert voice_text("one two three four five six", max_chars=15) == "one two three…"
    out = voice_text("a" * 50, max_chars=10)
    assert out == "a" * 9 + "…"
    assert len(out) == 10


def test_emoji_are_dropped():
    assert voice_text("你好😀！今天👍🏽天气好☀️。🇨🇳", max_chars=100) == "你好！今天天气好。"
    assert voice_text("Great job 🎉🎉", max_chars=100) == "Great job."
    assert voice_text("👨‍👩‍👧 family", max_chars=100) == "family."


def test_the_cut_never_splits_combining_sequences():
    text = "e\u0301" * 30  # e + combining acute, no boundaries at all
    out = voice_text(text, max_chars=10)
    assert len(out) <= 10
    assert out.endswith("…")
    assert not unicodedata.combining(out[0])
    body = out[:-1]
    assert body == "e\u0301" * (len(body) // 2)


def test_multibyte_text_is_counted_in_characters():
    out = voice_text("𠀀𠀁𠀂。" * 10, max_chars=9)  # astral-plane CJK, 4 UTF-8 bytes each
    assert out == "𠀀𠀁𠀂。𠀀𠀁𠀂。"
    out.encode("utf-8")


def test_markup_only_gives_empty_text():
    assert voice_text("```\n```\n---\n", max_chars=10) == ""


def test_max_chars_must_be_positive():
    with pytest.raises(ValueError, match="max_chars"):
        voice_text("hi", max_chars=0)
