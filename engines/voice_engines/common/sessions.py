"""Conversation history, for the LLM engine's /chat and the gateway's turns: bounded in
turns per session, in sessions (least recently used go first) and in time (idle sessions
expire)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

Message = dict[str, str]


@dataclass
class Session:
    id: str
    turns: deque[tuple[str, str]]
    touched: float = field(default_factory=time.monotonic)
    # Turns of one conversation are answered in order, never interleaved.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def messages(self) -> list[Message]:
        history: list[Message] = []
        for user, assistant in self.turns:
            history.append({"role": "user", "content": user})
            history.append({"role": "assistant", "content": assistant})
        return history

    def remember(self, user: str, assistant: str) -> None:
        self.turns.append((user, assistant))


class SessionStore:
    def __init__(self, max_sessions: int, max_turns: int, ttl_s: float) -> None:
        self.max_sessions = max_sessions
        self.max_turns = max_turns
        self.ttl_s = ttl_s
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str | None) -> Session:
        """The session with that id, or a new one (with that id if one was given)."""
        now = time.monotonic()
        self._expire(now)
        if session_id and session_id in self._sessions:
            session = self._sessions[session_id]
            self._sessions.move_to_end(session_id)
        else:
            session = Session(session_id or uuid.uuid4().hex, deque(maxlen=self.max_turns))
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        session.touched = now
        return session

    def _expire(self, now: float) -> None:
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.touched <= self.ttl_s:
                return
            self._sessions.popitem(last=False)
