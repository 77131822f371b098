"""Piper (ONNX) voices. Piper phonemizes the whole text with espeak-ng, then synthesizes
one sentence at a time: exactly the unit the streaming endpoints send.

One ONNX run's memory grows with the audio it makes (about 1.4 MB per character here: a
4,096-character sentence without punctuation took the process from 0.28 GB to 5.1 GB, and
onnxruntime keeps its peak), so text reaches Piper in pieces of at most MAX_PIECE_CHARS,
cut at a sentence end where there is one, else at a clause, else between words."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# About 12 s of speech; a sentence longer than this is rare and is spoken in parts.
MAX_PIECE_CHARS = 200
# Where a long text is best cut, in order: after a sentence, after a clause, between words.
_CUTS = (re.compile(r"[.!?]+[\"')\]]*\s"), re.compile(r"[,;:]\s"), re.compile(r"\s"))


def bounded_pieces(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """text in consecutive pieces of at most max_chars characters (text that fits is one
    piece, unchanged)."""
    if len(text) <= max_chars:
        return [text]
    pieces = []
    rest = text.strip()
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]
        cut = max_chars  # a word longer than the window is cut where it must be
        for pattern in _CUTS:
            ends = [m.end() for m in pattern.finditer(window)]
            if ends and ends[-1] > 1:
                cut = ends[-1]
                break
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    language: str
    sample_rate: int
    quality: str | None


class PiperBackend:
    def __init__(self, name: str, model_path: Path, config_path: Path) -> None:
        from piper import PiperVoice

        for path, what in ((model_path, "TTS_VOICE_PATH"), (config_path, "TTS_VOICE_CONFIG")):
            if not path.is_file():
                raise FileNotFoundError(f"{what} {path} does not exist")
        # onnxruntime sessions may run concurrently, and Piper guards its espeak-ng
        # phonemizer with a lock of its own, so no lock is needed here.
        self._voice = PiperVoice.load(model_path, config_path=config_path)
        config = self._voice.config
        self.info = VoiceInfo(
            name=name,
            language=config.espeak_voice,
            sample_rate=config.sample_rate,
            # Piper's config object drops the quality label; it is still in the JSON.
            quality=json.loads(config_path.read_text("utf-8")).get("audio", {}).get("quality"),
        )
        self._length_scale = config.length_scale

    def sentences(self, text: str, speed: float) -> Iterator[np.ndarray]:
        """Mono float32 audio at info.sample_rate, one array per sentence, each made only
        when asked for."""
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=self._length_scale / speed)
        for piece in bounded_pieces(text):
            for chunk in self._voice.synthesize(piece, syn_config=config):
                yield chunk.audio_float_array
