"""Text a client sends, checked at the edge: the engines hand it to C libraries
(espeak-ng, llama.cpp, whisper.cpp) that take NUL-terminated UTF-8, so a NUL character or
a lone surrogate (valid in a JSON string, not in UTF-8) is refused with 400 before any
work starts."""

from __future__ import annotations

import re

from voice_engines.common.errors import ApiError

_NUL = "\x00"
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str | None, field: str) -> None:
    if not text:
        return
    if _NUL in text:
        raise ApiError(400, "invalid_text", f"{field} contains a NUL character", field=field)
    if _SURROGATE.search(text):
        raise ApiError(
            400,
            "invalid_text",
            f"{field} contains a lone UTF-16 surrogate, which is not a character",
            field=field,
        )


def shortened(value: str, limit: int = 64) -> str:
    """A client's value quoted in an error message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
