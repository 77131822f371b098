"""Local servers that speak the vendors' documented wire formats over real HTTP, so the
adapters are tested against what Deepgram, OpenAI (and Groq, under /openai/v1) and
ElevenLabs send and expect: paths, query parameters, auth header and scheme, request
bodies, response shapes, error bodies and codes, Retry-After.

Each server answers per a script of behaviours the test sets (`vendor.script(...)`):
"ok", "401", "429:<seconds>", "500", "503", "slow:<seconds>"; "ok" once the script runs
out. Every request is recorded."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    form: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def tone(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


class FakeVendor:
    """Shared machinery: the key it accepts, the script, the record of requests."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.requests: list[Seen] = []
        self._script: deque[str] = deque()
        self._only = "/"
        self.lock = threading.Lock()

    def script(self, *behaviours: str, only: str = "/") -> None:
        """The next requests' behaviours, for requests whose path starts with only."""
        with self.lock:
            self._script, self._only = deque(behaviours), only

    def reset(self, key: str | None = None) -> None:
        with self.lock:
            self._script.clear()
            self.requests.clear()
            if key is not None:
                self.key = key

    def next_behaviour(self, path: str) -> str:
        with self.lock:
            if self._script and path.startswith(self._only):
                return self._script.popleft()
            return "ok"

    async def record(self, request: Request) -> Seen:
        body = await request.body()
        seen = Seen(
            request.method,
            request.url.path,
            dict(request.query_params),
            {k.lower(): v for k, v in request.headers.items()},
            body,
            time.monotonic(),
        )
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            seen.form = {
                k: (v if isinstance(v, str) else {"filename": v.filename, "data": await v.read()})
                for k, v in form.items()
            }
        with self.lock:
            self.requests.append(seen)
        return seen

    def calls(self, path_part: str = "") -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if path_part in r.path]

    async def failure(self, behaviour: str, errors: dict[int, dict[str, Any]]) -> Response | None:
        """The scripted failure's response in the vendor's shape, or None for "ok"."""
        name, _, arg = behaviour.partition(":")
        if name == "slow":
            await asyncio.sleep(float(arg))
            return None
        if name == "ok":
            return None
        status = int(name)
        headers = {"Retry-After": arg} if status == 429 and arg else {}
        return JSONResponse(errors[status], status_code=status, headers=headers)


class Deepgram(FakeVendor):
    """POST /v1/listen, Authorization: Token <key>, raw audio body."""

    transcript = "what is the weather like today"

    def errors(self, _presented: str) -> dict[int, dict[str, Any]]:
        rid = str(uuid.uuid4())
        return {
            401: {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": rid},
            429: {
                "err_code": "TOO_MANY_REQUESTS",
                "err_msg": "Too many requests. Please try again later",
                "request_id": rid,
            },
            500: {
                "err_code": "INTERNAL_SERVER_ERROR",
                "err_msg": "Internal error",
                "request_id": rid,
            },
            503: {"err_code": "SERVICE_UNAVAILABLE", "err_msg": "Try again", "request_id": rid},
        }

    async def listen(self, request: Request) -> Response:
        seen = await self.record(request)
        scheme, _, presented = seen.headers.get("authorization", "").partition(" ")
        errors = self.errors(presented)
        if scheme != "Token" or presented != self.key:
            return JSONResponse(errors[401], status_code=401)
        if failed := await self.failure(self.next_behaviour(request.url.path), errors):
            return failed
        try:
            samples, rate = sf.read(io.BytesIO(seen.body))
        except Exception:
            return JSONResponse(
                {
                    "err_code": "Bad Request",
                    "err_msg": "Bad Request: failed to process audio: corrupt or unsupported data",
                    "request_id": str(uuid.uuid4()),
                },
                status_code=400,
            )
        duration = len(samples) / rate
        return JSONResponse(
            {
                "metadata": {
                    "request_id": str(uuid.uuid4()),
                    "duration": duration,
                    "channels": 1,
                    "models": [str(uuid.uuid4())],
                },
                "results": {
                    "channels": [
                        {
                            "alternatives": [
                                {
                                    "transcript": self.transcript,
                                    "confidence": 0.98,
                                    "words": [
                                        {"word": w, "start": 0.0, "end": 0.1, "confidence": 0.98}
                                        for w in self.transcript.split()
                                    ],
                                }
                            ]
                        }
                    ]
                },
            }
        )

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/listen", self.listen, methods=["POST"])])


class OpenAI(FakeVendor):
    """Chat completions (streamed SSE or JSON), audio transcriptions and audio speech,
    with Authorization: Bearer <key>. Mounted at /v1 (OpenAI) and /openai/v1 (Groq)."""

    reply = "It is sunny and warm today. Enjoy your walk in the park!"
    transcript = "tell me about the weather"

    def errors(self, presented: str) -> dict[int, dict[str, Any]]:
        def error(message: str, kind: str, code: str | None) -> dict[str, Any]:
            return {"error": {"message": message, "type": kind, "param": None, "code": code}}

        return {
            # OpenAI names the key it was given in this message.
            401: error(
                f"Incorrect API key provided: {presented}.",
                "invalid_request_error",
                "invalid_api_key",
            ),
            429: error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
            500: error(
                "The server had an error while processing your request.", "server_error", None
            ),
            503: error("The engine is currently overloaded.", "server_error", None),
        }

    async def _gate(self, request: Request) -> tuple[Seen, Response | None]:
        seen = await self.record(request)
        scheme, _, presented = seen.headers.get("authorization", "").partition(" ")
        errors = self.errors(presented)
        if scheme != "Bearer" or presented != self.key:
            return seen, JSONResponse(errors[401], status_code=401)
        return seen, await self.failure(self.next_behaviour(request.url.path), errors)

    async def chat(self, request: Request) -> Response:
        seen, failed = await self._gate(request)
        if failed:
            return failed
        body = seen.json()
        if not isinstance(body.get("model"), str) or not body.get("messages"):
            return JSONResponse(
                {
                    "error": {
                        "message": "model and messages are required",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": None,
                    }
                },
                status_code=400,
            )
        words = self.reply.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": self.reply},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 20,
                        "completion_tokens": len(pieces),
                        "total_tokens": 20 + len(pieces),
                    },
                }
            )

        async def events() -> Any:
            yield f"data: {json.dumps(chunk({'role': 'assistant', 'content': ''}))}\n\n"
            for piece in pieces:
                await asyncio.sleep(0.01)
                yield f"data: {json.dumps(chunk({'content': piece}))}\n\n"
            yield f"data: {json.dumps(chunk({}, 'stop'))}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "prompt_tokens": 20,
                    "completion_tokens": len(pieces),
                    "total_tokens": 20 + len(pieces),
                }
                yield f"data: {json.dumps({**chunk({}), 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def transcriptions(self, request: Request) -> Response:
        seen, failed = await self._gate(request)
        if failed:
            return failed
        upload = seen.form.get("file")
        if not isinstance(upload, dict) or not isinstance(seen.form.get("model"), str):
            return JSONResponse(
                {
                    "error": {
                        "message": "file and model are required",
                        "type": "invalid_request_error",
                        "param": "file",
                        "code": None,
                    }
                },
                status_code=400,
            )
        sf.read(io.BytesIO(upload["data"]))  # must be real audio
        return JSONResponse({"text": self.transcript})

    async def speech(self, request: Request) -> Response:
        seen, failed = await self._gate(request)
        if failed:
            return failed
        body = seen.json()
        if not body.get("input") or not body.get("voice") or not body.get("model"):
            return JSONResponse(
                {
                    "error": {
                        "message": "model, input and voice are required",
                        "type": "invalid_request_error",
                        "param": "input",
                        "code": None,
                    }
                },
                status_code=400,
            )
        pcm = tone(0.05 * len(body["input"]), 24_000)  # "pcm": 24 kHz 16-bit mono

        async def chunks() -> Any:
            for offset in range(0, len(pcm), 4801):  # odd sizes: chunks split samples
                yield pcm[offset : offset + 4801]

        return StreamingResponse(chunks(), media_type="audio/pcm")

    def routes(self) -> list[Route]:
        return [
            Route("/chat/completions", self.chat, methods=["POST"]),
            Route("/audio/transcriptions", self.transcriptions, methods=["POST"]),
            Route("/audio/speech", self.speech, methods=["POST"]),
        ]

    def app(self) -> Starlette:
        return Starlette(
            routes=[Mount("/v1", routes=self.routes()), Mount("/openai/v1", routes=self.routes())]
        )


class ElevenLabs(FakeVendor):
    """POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>, xi-api-key."""

    def errors(self, _presented: str) -> dict[int, dict[str, Any]]:
        return {
            401: {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}},
            429: {
                "detail": {
                    "status": "too_many_concurrent_requests",
                    "message": "Too many concurrent requests for your subscription.",
                }
            },
            500: {"detail": {"status": "internal_error", "message": "Internal server error"}},
            503: {"detail": {"status": "system_busy", "message": "The system is busy"}},
        }

    async def stream(self, request: Request) -> Response:
        seen = await self.record(request)
        errors = self.errors(seen.headers.get("xi-api-key", ""))
        if seen.headers.get("xi-api-key") != self.key:
            return JSONResponse(errors[401], status_code=401)
        if failed := await self.failure(self.next_behaviour(request.url.path), errors):
            return failed
        body = seen.json()
        fmt = seen.query.get("output_format", "mp3_44100_128")
        if not body.get("text") or not fmt.startswith("pcm_"):
            return JSONResponse(
                {
                    "detail": [
                        {
                            "loc": ["body", "text"],
                            "msg": "field required",
                            "type": "value_error.missing",
                        }
                    ]
                },
                status_code=422,
            )
        pcm = tone(0.05 * len(body["text"]), int(fmt.removeprefix("pcm_")))

        async def chunks() -> Any:
            for offset in range(0, len(pcm), 3001):
                yield pcm[offset : offset + 3001]

        return StreamingResponse(chunks(), media_type="audio/pcm")

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/v1/text-to-speech/{voice_id}/stream", self.stream, methods=["POST"])]
        )


class Engines:
    """Stands in for our three engines (their native /transcribe and /synthesize, the LLM's
    OpenAI-compatible chat completions); the endpoints, each call's path and headers recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def _record(self, request: Request) -> None:
        with self.lock:
            self.calls.append(
                (request.url.path, {k.lower(): v for k, v in request.headers.items()})
            )

    def take(self) -> list[tuple[str, dict[str, str]]]:
        with self.lock:
            calls, self.calls = self.calls, []
        return calls

    async def transcribe(self, request: Request) -> Response:
        self._record(request)
        await request.form()
        return JSONResponse({"text": "what is the weather like"})

    async def chat(self, request: Request) -> Response:
        self._record(request)
        body = await request.json()

        async def events() -> Any:
            for piece in ("It is sunny.", " Enjoy the day."):
                await asyncio.sleep(0.01)
                chunk = {
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": piece}}],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def synthesize(self, request: Request) -> Response:
        self._record(request)
        body = await request.json()
        pcm = tone(0.02 * len(body["text"]), int(body["sample_rate"]))
        return StreamingResponse(iter([pcm]), media_type="audio/pcm")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/transcribe", self.transcribe, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/synthesize", self.synthesize, methods=["POST"]),
            ]
        )


class ThreadServer:
    """uvicorn serving an app on a thread, on a free loopback port."""

    def __init__(self, app: Starlette) -> None:
        from voice_engines.demo.stack import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("fake vendor server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
