"""Gateway settings, read from the environment (names are the field names in upper case:
GATEWAY_ROUTES_PATH, GATEWAY_AGENT, PORT, ...)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = "You are a helpful voice assistant. Answer in one or two short sentences."


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    log_level: str = "INFO"

    # The agent this gateway serves: a label on every metric.
    gateway_agent: str = "default"
    # The operator mounts the routes ConfigMap here (a directory volume, so kubelet swaps
    # the file in place and the watcher sees the change).
    gateway_routes_path: Path = Path("/etc/voiceops/routes/routes.json")
    gateway_routes_poll_seconds: float = Field(1.0, gt=0)

    # Each stage call, retries included, must finish within its timeout. For streamed
    # stages (LLM, TTS) it bounds the wait for the first byte and every gap after it.
    gateway_stt_timeout: float = Field(30.0, gt=0)
    gateway_llm_timeout: float = Field(60.0, gt=0)
    gateway_tts_timeout: float = Field(30.0, gt=0)
    gateway_connect_timeout: float = Field(3.0, gt=0)
    # Extra attempts after a transient failure, only where a repeat is harmless.
    gateway_retries: int = Field(2, ge=0, le=10)
    # A Retry-After longer than this is not waited for: the stage fails over (or fails)
    # at once, and the client gets the vendor's Retry-After.
    gateway_retry_max_wait: float = Field(2.0, ge=0)

    # Consecutive failures that open a provider's circuit, and how long it stays open
    # before one trial call may close it again.
    gateway_breaker_failures: int = Field(5, ge=1)
    gateway_breaker_reset_seconds: float = Field(30.0, gt=0)

    # Conversation history: user/assistant turns kept per session, sessions kept (least
    # recently used go first), and how long an idle session lives.
    gateway_history_turns: int = Field(8, ge=0)
    gateway_max_sessions: int = Field(1000, ge=1)
    gateway_session_ttl: float = Field(3600.0, gt=0)

    gateway_max_body_bytes: int = Field(26 * 1024 * 1024, ge=1024)
    gateway_max_audio_seconds: float = Field(120.0, gt=0)
    # Reply audio: 16-bit mono PCM at this rate unless the client asks for another.
    gateway_sample_rate: int = Field(22050, ge=8000, le=48000)
    # Streaming: the first piece of a reply is spoken after this many words even before
    # its sentence ends (0: wait for the end of the sentence or its first clause).
    gateway_first_piece_words: int = Field(6, ge=0, le=50)
    # Sent when the llm route's settings name no systemPrompt.
    gateway_system_prompt: str = DEFAULT_SYSTEM_PROMPT
