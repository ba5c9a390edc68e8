"""The ownership-proof file helpers."""

from __future__ import annotations

import pytest

from connectors.aligenie import (
    ownership_url_path,
    validate_ownership_content,
    validate_ownership_filename,
)


@pytest.mark.parametrize("name", ["7f3a9c0e1b.txt", "A-b_9.txt", "x" * 120 + ".txt"])
def test_valid_names(name):
    assert validate_ownership_filename(name) == name
    assert ownership_url_path(name) == f"/aligenie/{name}"


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".txt",
        "../etc/passwd.txt",
        "..%2f.txt",
        "a/b.txt",
        "a\\b.txt",
        "/abs.txt",
        "abc.txt\n",
        "abc.TXT",
        "abc.html",
        "abc.txt.exe",
        "a.b.txt",
        "ａｂｃ.txt",
        "x" * 121 + ".txt",
    ],
)
def test_unsafe_names_are_refused(name):
    with pytest.raises(ValueError, match="ownership file name"):
        validate_ownership_filename(name)


def test_content_checks():
    assert validate_ownership_content(b"a1b2c3\n") == b"a1b2c3\n"
    with pytest.raises(ValueError, match="empty"):
        validate_ownership_content(b"")
    with pytest.raises(ValueError, match="larger than 10 bytes"):
        validate_ownership_content(b"x" * 11, max_bytes=10)
    with pytest.raises(ValueError, match="UTF-8"):
        validate_ownership_content(b"\xff\xd8\xff")
