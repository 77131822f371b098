from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from voice_engines.common.settings import EngineSettings


class LlmSettings(EngineSettings):
    llm_backend: Literal["llamacpp", "ollama"] = "llamacpp"
    # GGUF file, for llamacpp.
    llm_model_path: Path = Path("/models/llm/model.gguf")
    # The served model name for llamacpp; the Ollama model tag for ollama.
    llm_model: str = "local"
    ollama_base_url: str = "http://127.0.0.1:11434"
    # Default completion length when a request names none.
    llm_max_tokens: int = Field(256, ge=1)
    # Requests asking for more are refused (422); defaults to LLM_CONTEXT.
    llm_max_tokens_limit: int | None = Field(None, ge=1)
    llm_temperature: float = Field(0.7, ge=0.0, le=2.0)
    llm_context: int = Field(2048, ge=128)
    llm_system_prompt: str = (
        "You are a helpful voice assistant. Answer in one or two short sentences."
    )
    llm_threads: int = Field(default_factory=lambda: min(4, os.cpu_count() or 1), ge=1)
    # /chat keeps this many user/assistant turns per session, for this many sessions.
    llm_history_turns: int = Field(8, ge=0)
    llm_max_sessions: int = Field(1000, ge=1)
    llm_session_ttl: float = Field(3600.0, gt=0)
    llm_max_prompt_chars: int = Field(32_000, ge=1)
    # Ollama: how long the server keeps the model in memory after a request.
    llm_keep_alive: str = "24h"
    llm_request_timeout: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _limit_within_context(self) -> LlmSettings:
        if self.llm_max_tokens_limit is None:
            self.llm_max_tokens_limit = self.llm_context
        if self.llm_max_tokens > self.llm_max_tokens_limit:
            raise ValueError("LLM_MAX_TOKENS is above LLM_MAX_TOKENS_LIMIT")
        return self

    @property
    def max_tokens_limit(self) -> int:
        return self.llm_max_tokens_limit or self.llm_context
