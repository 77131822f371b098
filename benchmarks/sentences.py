"""The gateway's sentence splitter (sentencex) against the regex splitter it replaced, in
the same run: CPU per streamed token and per sentence, on an English reply with
abbreviations and numbers and on a Chinese one.

    .venv/bin/python benchmarks/sentences.py [--repeats 200]

Tokens are 1-4 characters, as an LLM streams them; every token is fed as it would arrive
and the pieces that come out are counted. The ratio is the new splitter's time over the
old one's; what matters for a streaming reply is the absolute cost per token against the
time between tokens (6.5 ms at llama.cpp's 154 tokens/s with SmolLM2-135M, README).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

from voice_engines.gateway.sentences import SentenceSplitter

ENGLISH = (
    "Sure! Dr. Smith sees patients from 9 a.m. to 5 p.m. on weekdays, e.g. Monday to Friday. "
    "The visit costs 3.50 dollars, and parking is free. Is there anything else? "
    "You can also call the U.S. office at 555-0100. They open at 8 a.m. sharp. Goodbye."
)
CHINESE = (
    "您好！史密斯医生周一到周五上午九点到下午五点看诊。"
    "挂号费三块五，停车免费。还有别的问题吗？祝您愉快。"
)


class RegexSplitter:
    """The splitter before sentencex (sentence ends only; the clause and first-words
    rules are the same in both and left out of the comparison)."""

    _END = re.compile(r"""[.!?…]+["')\]]*\s+|\n+""")
    _ABBREVIATIONS = frozenset(
        {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "approx"}
    )

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        start = 0
        for match in self._END.finditer(self._buffer):
            words = self._buffer[start : match.start() + 1][:-1].split()
            if words and words[-1].lower() in self._ABBREVIATIONS:
                continue
            if self._buffer[start : match.end()].strip():
                out.append(self._buffer[start : match.end()].strip())
            start = match.end()
        self._buffer = self._buffer[start:]
        return out

    def flush(self) -> str | None:
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None


def tokens(text: str) -> list[str]:
    """1-4 character pieces, deterministic."""
    out, i, step = [], 0, 0
    while i < len(text):
        size = 1 + step % 4
        out.append(text[i : i + size])
        i, step = i + size, step + 1
    return out


def stream(make, pieces: list[str]) -> list[str]:
    splitter = make()
    out: list[str] = []
    for piece in pieces:
        out += splitter.feed(piece)
    rest = splitter.flush()
    return out + ([rest] if rest else [])


def per_call(make, pieces: list[str], repeats: int) -> float:
    """Median seconds of CPU for one whole reply."""
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        stream(make, pieces)
        samples.append(time.process_time() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print(f"{'reply':8} {'splitter':9} {'pieces':>6} {'µs/token':>9} {'µs/sentence':>12} ratio")
    for name, text in (("english", ENGLISH), ("chinese", CHINESE)):
        pieces = tokens(text)
        timings = {}
        for label, make in (("regex", RegexSplitter), ("sentencex", SentenceSplitter)):
            out = stream(make, pieces)
            seconds = per_call(make, pieces, args.repeats)
            timings[label] = seconds
            ratio = seconds / timings["regex"]
            print(
                f"{name:8} {label:9} {len(out):6} {seconds / len(pieces) * 1e6:9.1f} "
                f"{seconds / len(out) * 1e6:12.1f} {ratio:.2f}"
            )
            print(f"{'':8} {'':9} {out}")


if __name__ == "__main__":
    main()
