from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from voice_engines.common.settings import EngineSettings


class SttSettings(EngineSettings):
    stt_backend: Literal["whispercpp", "faster-whisper"] = "whispercpp"
    # A ggml file for whispercpp, a CTranslate2 model folder for faster-whisper.
    stt_model_path: Path = Path("/models/stt/model.bin")
    # Served model name (GET /models, verbose_json); defaults to the model file's name.
    stt_model_name: str = ""
    stt_threads: int = Field(default_factory=lambda: min(4, os.cpu_count() or 1), ge=1)
    stt_temperature: float = Field(0.0, ge=0.0, le=1.0)
    # "auto" detects the language (multilingual models only).
    stt_language: str = "en"
    # 1 = greedy decoding, the fastest; larger beams rarely help on clean speech.
    stt_beam_size: int = Field(1, ge=1, le=10)
    # faster-whisper only: CTranslate2 compute type (default, int8, float32, ...).
    stt_compute_type: str = "default"
    stt_max_audio_seconds: float = Field(600.0, gt=0)

    @property
    def model_name(self) -> str:
        if self.stt_model_name:
            return self.stt_model_name
        path = self.stt_model_path
        return path.name if path.is_dir() else path.stem
