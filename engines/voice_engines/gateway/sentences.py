"""Cuts a stream of LLM tokens into sentences for speech, as early as it can be sure.

Where sentences end is decided by sentencex (a maintained rule-based segmenter, compiled:
abbreviations such as "Dr." and "e.g.", numbers, quotes, and the CJK stops 。！？ that no
space follows). A boundary is final once the next sentence has begun; until then "3." may
still become "3.5". A sentence whose end is followed only by white space so far goes out
at once when the segmenter would split there whatever came next, except after a dotted
abbreviation ("p.m.", "U.S."), which may end a sentence or not: that waits for the next
word. A line break always ends a piece. Text that runs on past `max_chars` is cut at its
last comma, semicolon or colon; before the first piece has gone out the limit is
`first_max_chars`, since the first audio waits for it. With `first_words` set, the first
piece goes out after that many whole words even without punctuation: a short pause in the
first sentence buys the time the model would take to write the rest of it, which is most
of the time to first audio on a small CPU."""

from __future__ import annotations

import re

from sentencex import segment

_LINES = re.compile(r"\n+")
# CJK clause marks take no space after them; ASCII ones do ("3,000" is no clause).
_CLAUSE = re.compile(r"[,;:]\s+|[、，；：]")
# A sentence end with only white space after it so far.
_OPEN_END = re.compile(r"""[.!?…。！？]+["'”’)\]」』]*\s+$""")
# A dotted abbreviation before that end ("p.m.", "e.g.", "U.S."): it may end a sentence or
# not, which only the next word tells.
_DOTTED = re.compile(r"""\w\.\w{1,3}\.["'”’)\]]*\s+$""")
# What a next sentence could begin with, to ask the segmenter about an open end.
_NEXT = "A"


class SentenceSplitter:
    def __init__(
        self,
        max_chars: int = 160,
        first_max_chars: int = 40,
        first_words: int = 0,
        language: str = "en",
    ) -> None:
        self.max_chars = max_chars
        self.first_max_chars = first_max_chars
        self.first_words = first_words
        self.language = language
        self._buffer = ""
        self._emitted = False

    def feed(self, text: str) -> list[str]:
        """The sentences completed by this piece of text."""
        out, self._buffer = self._complete(self._buffer + text)
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

    def _complete(self, text: str) -> tuple[list[str], str]:
        """The finished sentences at the start of `text`, and the rest."""
        *lines, last = _LINES.split(text)
        out = [s for line in lines for s in self._sentences(line)]
        parts = list(segment(self.language, last))
        for part in parts[:-1]:
            if part.strip():
                out.append(part.strip())
        tail = parts[-1] if parts else ""
        if self._ends_here(tail):
            out.append(tail.strip())
            tail = ""
        return out, tail

    def _sentences(self, line: str) -> list[str]:
        return [s.strip() for s in segment(self.language, line) if s.strip()]

    def _ends_here(self, tail: str) -> bool:
        if not _OPEN_END.search(tail) or _DOTTED.search(tail):
            return False
        return len(list(segment(self.language, tail + _NEXT))) > 1
