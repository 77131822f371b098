"""Conversation sessions: the bounded store from common (turns per session, sessions kept,
idle time), with the session ids a client may choose checked at the edge."""

from __future__ import annotations

import re

from voice_engines.common.errors import ApiError
from voice_engines.common.sessions import Session, SessionStore

_SESSION_ID = re.compile(r"^[\w.:\-]{1,128}$")


def checked_session_id(value: str | None, field: str = "session_id") -> str | None:
    if value is None or value == "":
        return None
    if not _SESSION_ID.match(value):
        raise ApiError(
            422,
            "invalid_request",
            "session_id must be 1-128 characters of letters, digits, '_', '.', ':' or '-'",
            field=field,
        )
    return value


__all__ = ["Session", "SessionStore", "checked_session_id"]
