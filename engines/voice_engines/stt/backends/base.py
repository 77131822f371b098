from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: list[Segment] = field(default_factory=list)


class SpeechToText(Protocol):
    multilingual: bool

    def transcribe(
        self, audio: np.ndarray, language: str | None, temperature: float, prompt: str | None
    ) -> Transcript:
        """audio: mono float32 at 16 kHz; language None means detect it."""
        ...
