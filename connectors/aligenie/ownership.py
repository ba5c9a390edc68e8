"""The skill's ownership-proof file (PROTOCOLS.md §D.1, "Authentication / verification" 1).

When the developer saves the webhook URL, the AliGenie console offers an 认证文件 named
`<hash>.txt` to download and serve at `https://<host>[:port]/aligenie/<hash>.txt`; the
platform fetches it right then, and an invalid TLS certificate fails the check. The
content's format is UNKNOWN, so it is stored and served byte for byte (as text/plain).
The name comes from an uploader and ends up in a URL route, hence the strict pattern.
"""

from __future__ import annotations

import re

OWNERSHIP_PATH_PREFIX = "/aligenie/"
OWNERSHIP_MAX_BYTES = 4096
_FILENAME = re.compile(r"[A-Za-z0-9_-]{1,120}\.txt")


def validate_ownership_filename(name: str) -> str:
    """Return `name` when it is a safe `<hash>.txt`; raise `ValueError` otherwise.

    Only ASCII letters, digits, `_` and `-` before `.txt`: no separators, no dots, so no
    `..`, absolute path or hidden file can get through.
    """
    if not isinstance(name, str) or not _FILENAME.fullmatch(name):
        raise ValueError(
            "ownership file name must be letters, digits, '_' or '-' followed by '.txt' "
            f"(at most 124 characters), got {name!r}"
        )
    return name


def ownership_url_path(name: str) -> str:
    """The path the platform fetches: `/aligenie/<name>`."""
    return OWNERSHIP_PATH_PREFIX + validate_ownership_filename(name)


def validate_ownership_content(content: bytes, *, max_bytes: int = OWNERSHIP_MAX_BYTES) -> bytes:
    """Return the file's bytes when they are a small UTF-8 text; raise `ValueError`.

    The file is a short token; a large or binary upload is a mistake (the wrong file).
    """
    if not content:
        raise ValueError("ownership file is empty")
    if len(content) > max_bytes:
        raise ValueError(f"ownership file is larger than {max_bytes} bytes: is it the right file?")
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("ownership file is not UTF-8 text: is it the right file?") from None
    return content
