"""The LLM engine's settings: the fields of voice_contracts.env.LlmEnv, from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from voice_contracts.env import DEFAULT_SYSTEM_PROMPT, LlmEnv
from voice_engines.common.settings import EngineSettings


class LlmEngineSettings(LlmEnv, EngineSettings):
    @model_validator(mode="after")
    def _limit_within_context(self) -> LlmEngineSettings:
        if self.llm_max_tokens_limit is None:
            self.llm_max_tokens_limit = self.llm_context
        if self.llm_max_tokens > self.llm_max_tokens_limit:
            raise ValueError("LLM_MAX_TOKENS is above LLM_MAX_TOKENS_LIMIT")
        return self

    @property
    def max_tokens_limit(self) -> int:
        return self.llm_max_tokens_limit or self.llm_context

    @property
    def model_path(self) -> Path:
        return Path(self.llm_model_path)

    @property
    def system_prompt(self) -> str:
        return self.llm_system_prompt or DEFAULT_SYSTEM_PROMPT
