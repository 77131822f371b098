"""Embedded llama.cpp (llama-cpp-python) loading a GGUF file; the chat template comes
from the GGUF's own metadata."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from voice_engines.common.device import resolve_device
from voice_engines.common.errors import ApiError
from voice_engines.llm.backends.base import Completion, Delta, GenerationParams, Message
from voice_engines.llm.settings import LlmEngineSettings


def gpu_layers(device: str, wanted: int | None) -> int:
    """llama.cpp's n_gpu_layers: none on the CPU, else LLM_GPU_LAYERS (unset: every layer,
    which llama.cpp spells -1)."""
    if device != "cuda":
        return 0
    return -1 if wanted is None else wanted


def _context_error(exc: ValueError) -> ApiError:
    return ApiError(400, "context_overflow", f"the conversation does not fit the model: {exc}")


class LlamaCppBackend:
    def __init__(self, settings: LlmEngineSettings) -> None:
        from llama_cpp import Llama, llama_supports_gpu_offload

        path = settings.model_path
        if not path.is_file():
            raise FileNotFoundError(f"LLM_MODEL_PATH {path} is not a GGUF file")
        self.device = resolve_device(
            settings.llm_device, bool(llama_supports_gpu_offload()), "LLM_DEVICE"
        )
        self._llm = Llama(
            model_path=str(path),
            n_gpu_layers=gpu_layers(self.device, settings.llm_gpu_layers),
            n_ctx=settings.llm_context,
            n_threads=settings.llm_threads,
            verbose=False,
        )
        # A llama.cpp context holds one sequence's KV cache: one generation at a time.
        self._lock = threading.Lock()

    def _kwargs(self, params: GenerationParams) -> dict[str, Any]:
        return {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "stop": params.stop,
            "seed": params.seed,
        }

    def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        with self._lock:
            try:
                result: Any = self._llm.create_chat_completion(
                    messages=messages,  # type: ignore[arg-type]
                    **self._kwargs(params),
                )
            except ValueError as exc:
                raise _context_error(exc) from None
        choice = result["choices"][0]
        return Completion(
            text=choice["message"]["content"] or "",
            input_tokens=result["usage"]["prompt_tokens"],
            output_tokens=result["usage"]["completion_tokens"],
            finish_reason=choice["finish_reason"] or "stop",
        )

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[Delta]:
        with self._lock:
            try:
                chunks: Any = self._llm.create_chat_completion(
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                    **self._kwargs(params),
                )
                produced, finish = 0, "stop"
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content") or ""
                    if text:
                        produced += 1  # llama-cpp-python emits one chunk per token
                        yield Delta(text)
                    finish = choice.get("finish_reason") or finish
            except ValueError as exc:
                raise _context_error(exc) from None
            # The context now holds exactly the prompt and what was generated.
            prompt_tokens = max(0, self._llm.n_tokens - produced)
        yield Delta("", finish_reason=finish, input_tokens=prompt_tokens, output_tokens=produced)
