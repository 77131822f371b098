"""Chat backends: each takes OpenAI-style messages and returns a completion, whole or as
a stream of deltas."""

from __future__ import annotations

from voice_engines.llm.backends.base import ChatBackend, Completion, Delta, GenerationParams
from voice_engines.llm.settings import LlmEngineSettings

__all__ = ["ChatBackend", "Completion", "Delta", "GenerationParams", "load_backend"]


def load_backend(settings: LlmEngineSettings) -> ChatBackend:
    if settings.llm_backend == "llamacpp":
        from voice_engines.llm.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(settings)
    from voice_engines.llm.backends.ollama import OllamaBackend

    return OllamaBackend(settings)
