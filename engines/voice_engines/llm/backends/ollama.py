"""An Ollama server through the official ollama client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from voice_engines.common.errors import ApiError
from voice_engines.llm.backends.base import Completion, Delta, GenerationParams, Message
from voice_engines.llm.settings import LlmEngineSettings


class OllamaBackend:
    def __init__(self, settings: LlmEngineSettings) -> None:
        import ollama

        self._ollama = ollama
        self._client = ollama.Client(
            host=settings.ollama_base_url, timeout=settings.llm_request_timeout
        )
        self._model = settings.llm_model
        self._context = settings.llm_context
        self._keep_alive = settings.llm_keep_alive
        try:
            self._client.show(self._model)
        except ollama.ResponseError as exc:
            raise FileNotFoundError(
                f"Ollama at {settings.ollama_base_url} has no model {self._model!r}: {exc.error}"
            ) from None

    def _options(self, params: GenerationParams) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_predict": params.max_tokens,
            "temperature": params.temperature,
            "num_ctx": self._context,
        }
        if params.stop:
            options["stop"] = params.stop
        if params.seed is not None:
            options["seed"] = params.seed
        return options

    def _call(self, messages: list[Message], params: GenerationParams, stream: bool) -> Any:
        try:
            if stream:
                return self._client.chat(
                    model=self._model,
                    messages=messages,
                    stream=True,
                    options=self._options(params),
                    keep_alive=self._keep_alive,
                )
            return self._client.chat(
                model=self._model,
                messages=messages,
                stream=False,
                options=self._options(params),
                keep_alive=self._keep_alive,
            )
        except self._ollama.ResponseError as exc:
            raise self._error(exc) from None
        except ConnectionError as exc:
            raise ApiError(503, "backend_unavailable", f"Ollama is unreachable: {exc}") from None

    def _error(self, exc: Any) -> ApiError:
        return ApiError(502, "backend_error", f"Ollama answered {exc.status_code}: {exc.error}")

    @staticmethod
    def _finish(done_reason: str | None) -> str:
        return "length" if done_reason == "length" else "stop"

    def complete(self, messages: list[Message], params: GenerationParams) -> Completion:
        response = self._call(messages, params, stream=False)
        return Completion(
            text=response.message.content or "",
            input_tokens=response.prompt_eval_count or 0,
            output_tokens=response.eval_count or 0,
            finish_reason=self._finish(response.done_reason),
        )

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[Delta]:
        chunks = self._call(messages, params, stream=True)
        try:
            for chunk in chunks:
                if chunk.message.content:
                    yield Delta(chunk.message.content)
                if chunk.done:
                    yield Delta(
                        "",
                        finish_reason=self._finish(chunk.done_reason),
                        input_tokens=chunk.prompt_eval_count or 0,
                        output_tokens=chunk.eval_count or 0,
                    )
        except self._ollama.ResponseError as exc:
            raise self._error(exc) from None
        except ConnectionError as exc:
            raise ApiError(503, "backend_unavailable", f"Ollama is unreachable: {exc}") from None
