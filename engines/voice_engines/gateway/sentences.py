"""Cuts a stream of LLM tokens into sentences for speech, as early as it can be sure.

A sentence ends at . ! ? (or a line break) followed by white space; until the next
character arrives, "3." may still become "3.5" and "Mr." is not an end at all. Text that
runs on past `max_chars` is cut at its last comma, semicolon or colon; before the first
piece has gone out the limit is `first_max_chars`, since the first audio waits for it.
With `first_words` set, the first piece goes out after that many whole words even
without punctuation: a short pause in the first sentence buys the time the model would
take to write the rest of it, which is most of the time to first audio on a small CPU."""

from __future__ import annotations

import re

_END = re.compile(r"""[.!?…]+["')\]]*\s+|\n+""")
_CLAUSE = re.compile(r"[,;:]\s+")
# Abbreviations whose period ends no sentence (lower-cased, without the period).
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "approx"}
)


class SentenceSplitter:
    def __init__(
        self, max_chars: int = 160, first_max_chars: int = 40, first_words: int = 0
    ) -> None:
        self.max_chars = max_chars
        self.first_max_chars = first_max_chars
        self.first_words = first_words
        self._buffer = ""
        self._emitted = False

    def feed(self, text: str) -> list[str]:
        """The sentences completed by this piece of text."""
        self._buffer += text
        out: list[str] = []
        start = 0
        for match in _END.finditer(self._buffer):
            candidate = self._buffer[start : match.end()]
            if self._ends_in_abbreviation(self._buffer[start : match.start() + 1]):
                continue
            if candidate.strip():
                out.append(candidate.strip())
            start = match.end()
        self._buffer = self._buffer[start:]
        limit = self.max_chars if self._emitted or out else self.first_max_chars
        if len(self._buffer) > limit:
            cuts = list(_CLAUSE.finditer(self._buffer))
            if cuts:
                cut = cuts[-1].end()
                out.append(self._buffer[:cut].strip())
                self._buffer = self._buffer[cut:]
        if not self._emitted and not out and self.first_words > 0:
            # The word after the last one counted has begun: those before it are whole.
            words = re.match(rf"\s*(?:\S+\s+){{{self.first_words}}}(?=\S)", self._buffer)
            if words:
                out.append(self._buffer[: words.end()].strip())
                self._buffer = self._buffer[words.end() :]
        self._emitted = self._emitted or bool(out)
        return out

    def flush(self) -> str | None:
        """Whatever is left when the stream ends."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None

    @staticmethod
    def _ends_in_abbreviation(text: str) -> bool:
        if not text.endswith("."):
            return False
        words = text[:-1].split()
        return bool(words) and words[-1].lower() in ABBREVIATIONS
