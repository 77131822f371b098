"""The STT engine's settings: the fields of voice_contracts.env.SttEnv, from the environment."""

from __future__ import annotations

from pathlib import Path

from voice_contracts.env import SttEnv
from voice_engines.common.settings import EngineSettings


class SttEngineSettings(SttEnv, EngineSettings):
    @property
    def model_path(self) -> Path:
        return Path(self.stt_model_path)

    @property
    def model_name(self) -> str:
        if self.stt_model_name:
            return self.stt_model_name
        path = self.model_path
        return path.name if path.is_dir() else path.stem
