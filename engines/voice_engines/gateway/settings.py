"""Gateway settings: the fields of voice_contracts.env.GatewayEnv, from the environment
(names are the field names in upper case: GATEWAY_ROUTES_PATH, GATEWAY_AGENT, PORT, ...)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_contracts.env import DEFAULT_SYSTEM_PROMPT, GatewayEnv

__all__ = ["DEFAULT_SYSTEM_PROMPT", "GatewaySettings"]


class GatewaySettings(GatewayEnv, BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    @property
    def routes_path(self) -> Path:
        return Path(self.gateway_routes_path)
