"""Settings every engine shares, read from the environment (names are the field names in
upper case: HOST, PORT, ENGINE_MAX_CONCURRENCY, ...). The fields are the contract with
the operator (voice_contracts.env); this adds only the reading."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_contracts.env import EngineEnv


class EngineSettings(EngineEnv, BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)
