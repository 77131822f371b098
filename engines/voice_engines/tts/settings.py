from __future__ import annotations

from pathlib import Path

from pydantic import Field

from voice_engines.common.settings import EngineSettings


class TtsSettings(EngineSettings):
    tts_voice_path: Path = Path("/models/tts/voice.onnx")
    # Defaults to TTS_VOICE_PATH + ".json", Piper's convention.
    tts_voice_config: Path | None = None
    # Voice name clients ask for; defaults to the voice file's name without ".onnx".
    tts_voice_name: str = ""
    tts_speed: float = Field(1.0, ge=0.25, le=4.0)
    tts_max_text_chars: int = Field(4096, ge=1)

    @property
    def voice_config(self) -> Path:
        return self.tts_voice_config or Path(f"{self.tts_voice_path}.json")

    @property
    def voice_name(self) -> str:
        return self.tts_voice_name or self.tts_voice_path.name.removesuffix(".onnx")
