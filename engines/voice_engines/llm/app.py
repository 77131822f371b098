"""The LLM service: POST /generate, POST /chat (with session history),
POST /v1/chat/completions (OpenAI-compatible, SSE streaming), GET /models; plus /health,
/ready and /metrics from common."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry

from voice_engines.common.app import (
    Executor,
    build_engine_app,
    from_state,
    model_card,
    model_list,
    require_ready,
)
from voice_engines.common.errors import ApiError, error_body, error_responses
from voice_engines.common.metrics import RequestMetrics, histogram, mark_failed
from voice_engines.common.sessions import SessionStore
from voice_engines.common.text import check_text
from voice_engines.llm.backends import ChatBackend, Completion, GenerationParams, load_backend
from voice_engines.llm.backends.base import Delta, Message
from voice_engines.llm.schemas import ChatCompletionRequest, ChatRequest, GenerateRequest
from voice_engines.llm.settings import LlmEngineSettings

TOKEN_BUCKETS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Every chat template spends at least this many tokens on a message (its role and end
# markers), so a conversation of more than LLM_CONTEXT / this messages cannot fit.
MIN_TOKENS_PER_MESSAGE = 2


class LlmEngine:
    def __init__(self, settings: LlmEngineSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.backend: ChatBackend | None = None
        self.requests = RequestMetrics(registry, "llm_generation", "Generation")
        self.input_tokens = histogram(registry, "llm_input_tokens", "Prompt tokens", TOKEN_BUCKETS)
        self.output_tokens = histogram(
            registry, "llm_output_tokens", "Generated tokens", TOKEN_BUCKETS
        )

    def load(self) -> None:
        backend = load_backend(self.settings)
        backend.complete([{"role": "user", "content": "Hi"}], GenerationParams(1, 0.0))
        self.backend = backend

    def describe(self) -> dict[str, Any]:
        return {"backend": self.settings.llm_backend, "model": self.settings.llm_model}

    def params(
        self,
        max_tokens: int | None,
        temperature: float | None,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> GenerationParams:
        limit = self.settings.max_tokens_limit
        if max_tokens is not None and not 1 <= max_tokens <= limit:
            raise ApiError(
                422,
                "invalid_request",
                f"max_tokens must be between 1 and {limit}, got {max_tokens}",
                field="max_tokens",
            )
        return GenerationParams(
            max_tokens=max_tokens or self.settings.llm_max_tokens,
            temperature=self.settings.llm_temperature if temperature is None else temperature,
            stop=stop or [],
            seed=seed,
        )

    def check_prompt(self, messages: list[Message], field: str) -> None:
        """Refuses up front what cannot be answered, before the template and the tokenizer
        spend time on it."""
        for message in messages:
            check_text(message["content"], field)
        most = self.settings.llm_context // MIN_TOKENS_PER_MESSAGE
        if len(messages) > most:
            raise ApiError(
                400,
                "context_overflow",
                f"{len(messages)} messages cannot fit the model's context of "
                f"{self.settings.llm_context} tokens (at most {most} can)",
                field=field,
            )
        size = sum(len(m["content"]) for m in messages)
        if size > self.settings.llm_max_prompt_chars:
            raise ApiError(
                413,
                "prompt_too_large",
                f"the prompt is {size} characters; the limit is "
                f"{self.settings.llm_max_prompt_chars}",
                field=field,
            )

    def count(self, input_n: int, output_n: int) -> None:
        self.input_tokens.observe(input_n)
        self.output_tokens.observe(output_n)

    def with_system(self, messages: list[Message], system: str | None = None) -> list[Message]:
        if any(m["role"] == "system" for m in messages):
            return messages
        prompt = self.settings.system_prompt if system is None else system
        return [{"role": "system", "content": prompt}, *messages] if prompt else messages


def _require_text(text: str, field: str) -> None:
    check_text(text, field)
    if not text.strip():
        raise ApiError(400, "empty_text", f"{field} is empty", field=field)


Engine = Annotated[LlmEngine, Depends(from_state("engine"))]
Sessions = Annotated[SessionStore, Depends(from_state("sessions"))]
router = APIRouter()
GENERATE_ERRORS = error_responses(400, 408, 413, 422, 429, 502, 503)


async def _complete(
    request: Request,
    engine: LlmEngine,
    executor: Executor,
    messages: list[Message],
    params: GenerationParams,
) -> Completion:
    require_ready(request.app)
    assert engine.backend is not None
    result: Completion = await executor.run(engine.backend.complete, messages, params)
    engine.count(result.input_tokens, result.output_tokens)
    return result


def _usage(result: Completion) -> dict[str, int]:
    return {
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
    }


@router.post("/generate", responses=GENERATE_ERRORS)
async def generate(
    request: Request, engine: Engine, executor: Executor, body: GenerateRequest
) -> JSONResponse:
    _require_text(body.prompt, "prompt")
    params = engine.params(body.max_tokens, body.temperature, body.stop, body.seed)
    check_text(body.system, "system")
    for text in body.stop:
        check_text(text, "stop")
    messages = engine.with_system([{"role": "user", "content": body.prompt}], body.system)
    engine.check_prompt(messages, "prompt")
    result = await _complete(request, engine, executor, messages, params)
    return JSONResponse(
        {
            "text": result.text,
            "model": engine.settings.llm_model,
            "finish_reason": result.finish_reason,
            "usage": _usage(result),
        }
    )


@router.post("/chat", responses=GENERATE_ERRORS)
async def chat(
    request: Request, engine: Engine, executor: Executor, sessions: Sessions, body: ChatRequest
) -> JSONResponse:
    _require_text(body.message, "message")
    params = engine.params(body.max_tokens, body.temperature, seed=body.seed)
    session = sessions.get(body.session_id)
    async with session.lock:
        messages = engine.with_system(
            [*session.messages(), {"role": "user", "content": body.message}]
        )
        engine.check_prompt(messages, "message")
        result = await _complete(request, engine, executor, messages, params)
        session.remember(body.message, result.text)
    return JSONResponse(
        {
            "session_id": session.id,
            "reply": result.text,
            "turns": len(session.turns),
            "model": engine.settings.llm_model,
            "finish_reason": result.finish_reason,
            "usage": _usage(result),
        }
    )


@router.post("/v1/chat/completions", responses=GENERATE_ERRORS)
async def chat_completions(
    request: Request, engine: Engine, executor: Executor, body: ChatCompletionRequest
) -> Response:
    max_tokens = body.max_completion_tokens or body.max_tokens
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    for text in stop or ():
        check_text(text, "stop")
    params = engine.params(max_tokens, body.temperature, stop, body.seed)
    messages: list[Message] = [
        # Ollama and llama.cpp templates know "system", not OpenAI's newer "developer".
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in body.messages
    ]
    if not any(m["content"].strip() for m in messages if m["role"] == "user"):
        raise ApiError(400, "empty_text", "no user message has content", field="messages")
    messages = engine.with_system(messages)
    engine.check_prompt(messages, "messages")
    completion = _CompletionChunks(
        f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.model or engine.settings.llm_model
    )
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        require_ready(request.app)
        assert engine.backend is not None
        deltas = await executor.stream(engine.backend.stream, messages, params)
        return StreamingResponse(
            completion.events(request, engine, deltas, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    result = await _complete(request, engine, executor, messages, params)
    return JSONResponse(
        {
            "id": completion.id,
            "object": "chat.completion",
            "created": completion.created,
            "model": completion.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": result.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": result.input_tokens,
                "completion_tokens": result.output_tokens,
                "total_tokens": result.input_tokens + result.output_tokens,
            },
        }
    )


class _CompletionChunks:
    """One chat completion's identity, and its stream as OpenAI's server-sent events."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.id = completion_id
        self.created = created
        self.model = model

    @staticmethod
    def event(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return self.event(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )

    def delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self.chunk([{"index": 0, "delta": delta, "finish_reason": finish}])

    async def events(
        self,
        request: Request,
        engine: LlmEngine,
        deltas: AsyncIterator[Delta],
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        yield self.delta({"role": "assistant", "content": ""})
        try:
            async for delta in deltas:
                if delta.text:
                    yield self.delta({"content": delta.text})
                if delta.finish_reason is None:
                    continue
                engine.count(delta.input_tokens, delta.output_tokens)
                yield self.delta({}, delta.finish_reason)
                if include_usage:
                    yield self.chunk(
                        [],
                        usage={
                            "prompt_tokens": delta.input_tokens,
                            "completion_tokens": delta.output_tokens,
                            "total_tokens": delta.input_tokens + delta.output_tokens,
                        },
                    )
        except ApiError as exc:
            # Headers are gone: the error travels as an event, as OpenAI sends it, and the
            # request counts as the failure it is.
            mark_failed(request.scope, exc.status)
            yield self.event(error_body(exc.code, exc.message, exc.field))
        yield b"data: [DONE]\n\n"


@router.get("/models")
@router.get("/v1/models")
async def models(engine: Engine) -> JSONResponse:
    settings = engine.settings
    return model_list(model_card(settings.llm_model, settings.llm_backend))


def create_app(settings: LlmEngineSettings | None = None) -> FastAPI:
    settings = settings or LlmEngineSettings()
    registry = CollectorRegistry()
    engine = LlmEngine(settings, registry)
    app = build_engine_app(
        title="voice-llm",
        settings=settings,
        registry=registry,
        route_metrics={
            path: engine.requests for path in ("/generate", "/chat", "/v1/chat/completions")
        },
        load=engine.load,
        describe=engine.describe,
        single_stream=settings.llm_backend == "llamacpp",
    )
    app.state.engine = engine
    app.state.sessions = SessionStore(
        settings.llm_max_sessions, settings.llm_history_turns, settings.llm_session_ttl
    )
    app.include_router(router)
    return app
