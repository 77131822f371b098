"""Settings every engine shares, read from the environment (names are the field names in
upper case: HOST, PORT, ENGINE_MAX_CONCURRENCY, ...)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    log_level: str = "INFO"
    # How many inferences run at once. Each one already uses every thread it is given,
    # so more than 1 mostly trades latency for memory on a small node.
    engine_max_concurrency: int = Field(1, ge=1, le=64)
    # Requests admitted to wait for a worker; beyond that, 429 with Retry-After.
    engine_max_queue: int = Field(32, ge=0, le=10_000)
    # A queued request that has not started by then gets 503 with Retry-After.
    engine_queue_timeout: float = Field(60.0, gt=0)
    engine_retry_after: int = Field(1, ge=1)
    # Any request body above this is refused with 413 before it is read.
    engine_max_body_bytes: int = Field(26 * 1024 * 1024, ge=1024)
