"""The environment of each engine and of the gateway: the variables the operator renders
and the program reads. A variable's name is its field's name in upper case.

The programs read these with pydantic-settings (their settings classes subclass these
models); the operator builds the same models and renders them with `env_vars`, so a
variable renamed or retyped on one side fails type checking or validation on the other."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from voice_contracts.layout import MODELS_MOUNT, PORT, ROUTES_PATH

# A path as written: a model folder keeps its trailing slash ("/models/whisper/v1/").
PathText = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, Path) else v)]


def _threads() -> int:
    return min(4, os.cpu_count() or 1)


class _Env(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerEnv(_Env):
    host: str = "0.0.0.0"
    port: int = Field(PORT, ge=1, le=65535)
    log_level: str = "INFO"


class EngineEnv(ServerEnv):
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
    # Seconds a client may take to send a request's whole body; then 408 (slow clients).
    engine_body_timeout: float = Field(30.0, gt=0)


SttBackend = Literal["whispercpp", "faster-whisper"]
LlmBackend = Literal["llamacpp", "ollama"]
# auto (also when unset): CUDA when the library was built with it and a device is visible,
# else the CPU; cuda: a CUDA device or the model fails to load (saying why); cpu: never.
Device = Literal["auto", "cpu", "cuda"]


class SttEnv(EngineEnv):
    stt_backend: SttBackend = "whispercpp"
    # A ggml file for whispercpp, a CTranslate2 model folder for faster-whisper.
    stt_model_path: PathText = f"{MODELS_MOUNT}/stt/model.bin"
    # Served model name (GET /models, verbose_json); defaults to the model file's name.
    stt_model_name: str = ""
    stt_threads: int = Field(default_factory=_threads, ge=1)
    stt_temperature: float = Field(0.0, ge=0.0, le=1.0)
    # "auto" detects the language (multilingual models only).
    stt_language: str = "en"
    # 1 = greedy decoding, the fastest; larger beams rarely help on clean speech.
    stt_beam_size: int = Field(1, ge=1, le=10)
    # faster-whisper only: CTranslate2 compute type (default, int8, float32, ...).
    stt_compute_type: str = "default"
    stt_device: Device | None = None
    stt_max_audio_seconds: float = Field(600.0, gt=0)


class TtsEnv(EngineEnv):
    tts_voice_path: PathText = f"{MODELS_MOUNT}/tts/voice.onnx"
    # Defaults to TTS_VOICE_PATH + ".json", Piper's convention.
    tts_voice_config: PathText | None = None
    # Voice name clients ask for; defaults to the voice file's name without ".onnx".
    tts_voice_name: str = ""
    tts_speed: float = Field(1.0, ge=0.25, le=4.0)
    tts_max_text_chars: int = Field(4096, ge=1)


DEFAULT_SYSTEM_PROMPT = "You are a helpful voice assistant. Answer in one or two short sentences."


class LlmEnv(EngineEnv):
    llm_backend: LlmBackend = "llamacpp"
    # GGUF file, for llamacpp.
    llm_model_path: PathText = f"{MODELS_MOUNT}/llm/model.gguf"
    # The served model name for llamacpp; the Ollama model tag for ollama.
    llm_model: str = "local"
    ollama_base_url: str = "http://127.0.0.1:11434"
    # Default completion length when a request names none.
    llm_max_tokens: int = Field(256, ge=1)
    # Requests asking for more are refused (422); defaults to LLM_CONTEXT.
    llm_max_tokens_limit: int | None = Field(None, ge=1)
    llm_temperature: float = Field(0.7, ge=0.0, le=2.0)
    llm_context: int = Field(2048, ge=128)
    # None: DEFAULT_SYSTEM_PROMPT.
    llm_system_prompt: str | None = None
    llm_threads: int = Field(default_factory=_threads, ge=1)
    # llamacpp: where the model runs, and how many of its layers go to the GPU there
    # (None: all of them). Ollama places layers itself.
    llm_device: Device | None = None
    llm_gpu_layers: int | None = Field(None, ge=0)
    # /chat keeps this many user/assistant turns per session, for this many sessions.
    llm_history_turns: int = Field(8, ge=0)
    llm_max_sessions: int = Field(1000, ge=1)
    llm_session_ttl: float = Field(3600.0, gt=0)
    llm_max_prompt_chars: int = Field(32_000, ge=1)
    # Ollama: how long the server keeps the model in memory after a request.
    llm_keep_alive: str = "24h"
    llm_request_timeout: float = Field(300.0, gt=0)


class GatewayEnv(ServerEnv):
    # The agent this gateway serves: a label on every metric.
    gateway_agent: str = "default"
    # The operator mounts the routes ConfigMap here (a directory volume, so kubelet swaps
    # the file in place and the watcher sees the change).
    gateway_routes_path: PathText = ROUTES_PATH
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
    # Seconds a client may take to send a request's whole body; then 408 (slow clients).
    gateway_body_timeout: float = Field(60.0, gt=0)
    gateway_max_audio_seconds: float = Field(120.0, gt=0)
    # Reply audio: 16-bit mono PCM at this rate unless the client asks for another.
    gateway_sample_rate: int = Field(22050, ge=8000, le=48000)
    # Streaming: the first piece of a reply is spoken after this many words even before
    # its sentence ends (0: wait for the end of the sentence or its first clause).
    gateway_first_piece_words: int = Field(6, ge=0, le=50)
    # Sent when the llm route's settings name no systemPrompt.
    gateway_system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # A folder of API keys, one per file (a Secret mounted whole). Set: every request but
    # the probes needs one as a bearer key, or a token from POST /v1/token. Unset: open.
    gateway_auth_keys_dir: PathText | None = None
    # Lifetime of the tokens POST /v1/token mints.
    gateway_token_ttl: int = Field(300, ge=10, le=86_400)
    # Origins a browser may call the gateway from (CORS, and the WebSocket's Origin),
    # comma-separated; same-origin requests need no entry.
    gateway_cors_origins: str = ""


def env_vars(env: BaseModel, **process: Any) -> list[dict[str, str]]:
    """A container's `env`: the fields that were set, in upper case, then variables of
    the process itself (HOME, ...) that no settings class reads."""
    values = env.model_dump(exclude_unset=True, exclude_none=True, mode="json")
    merged = {name.upper(): value for name, value in values.items()} | process
    return [{"name": k, "value": str(v)} for k, v in merged.items() if v is not None]
