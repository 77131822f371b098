"""The TTS engine's settings: the fields of voice_contracts.env.TtsEnv, from the environment."""

from __future__ import annotations

from pathlib import Path

from voice_contracts.env import TtsEnv
from voice_engines.common.settings import EngineSettings


class TtsEngineSettings(TtsEnv, EngineSettings):
    @property
    def voice_path(self) -> Path:
        return Path(self.tts_voice_path)

    @property
    def voice_config(self) -> Path:
        return Path(self.tts_voice_config or f"{self.tts_voice_path}.json")

    @property
    def voice_name(self) -> str:
        return self.tts_voice_name or self.voice_path.name.removesuffix(".onnx")
