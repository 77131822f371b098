"""Piper (ONNX) voices. Piper phonemizes the whole text with espeak-ng, then synthesizes
one sentence at a time: exactly the unit the streaming endpoints send."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
        for chunk in self._voice.synthesize(text, syn_config=config):
            yield chunk.audio_float_array
