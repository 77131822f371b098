"""WebSocket /v1/stream: the client streams an utterance as PCM frames and marks its end;
the server answers with the transcript, the reply's tokens as the model writes them, and
the reply's audio a sentence at a time, the first sentence spoken while the model is
still writing the rest.

Client -> server
  {"type": "start", "session_id"?, "sample_rate"? (of the frames, default 16000),
   "language"?, "output_sample_rate"?}      optional; settings for what follows
  binary frames                              16-bit little-endian mono PCM
  {"type": "end"}                            end of utterance: the turn runs now
Server -> client
  {"type": "ready", "session_id", "output_sample_rate", "format": "pcm_s16le"}
  {"type": "transcript", "text"}
  {"type": "token", "text"}                  each piece of the reply
  {"type": "sentence", "index", "text"}      then that sentence's audio as binary frames
  {"type": "reply", "text"}                  the model finished
  {"type": "done", "session_id", "turns", "transcript", "reply", "providers",
   "timings", "usage"}                       the last audio has been sent
  {"type": "error", "error": {"code", "message", "field", "correlation_id"}}
A connection carries any number of turns, one at a time, all in one session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voice_engines.common.correlation import _correlation_id, pick_correlation_id
from voice_engines.common.errors import ApiError, error_body, validation_error
from voice_engines.gateway.audio import pcm_utterance
from voice_engines.gateway.pipeline import Pipeline, TurnListener, Utterance, counted_turn
from voice_engines.gateway.routes import RoutesWatcher
from voice_engines.gateway.sessions import checked_session_id

log = logging.getLogger(__name__)


class StartMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    session_id: str | None = None
    sample_rate: int = Field(16_000, ge=8000, le=48000)
    language: str | None = Field(None, max_length=16)
    output_sample_rate: int | None = Field(None, ge=8000, le=48000)


class Sender:
    """One writer at a time: the token stream and the audio stream share the socket."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = asyncio.Lock()

    async def json(self, payload: dict[str, Any]) -> None:
        async with self._lock:
            await self.websocket.send_text(json.dumps(payload))

    async def audio(self, pcm: bytes) -> None:
        async with self._lock:
            await self.websocket.send_bytes(pcm)

    async def error(self, error: ApiError) -> None:
        await self.json({"type": "error", **error_body(error.code, error.message, error.field)})


class StreamListener(TurnListener):
    """A turn as the stream's messages: text as JSON, the reply's audio as binary frames."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    async def transcript(self, text: str) -> None:
        await self.sender.json({"type": "transcript", "text": text})

    async def token(self, text: str) -> None:
        await self.sender.json({"type": "token", "text": text})

    async def sentence(self, index: int, text: str) -> None:
        await self.sender.json({"type": "sentence", "index": index, "text": text})

    async def audio(self, pcm: bytes) -> None:
        await self.sender.audio(pcm)

    async def reply(self, text: str) -> None:
        await self.sender.json({"type": "reply", "text": text})


class StreamSession:
    def __init__(self, websocket: WebSocket, pipeline: Pipeline, watcher: RoutesWatcher) -> None:
        self.websocket = websocket
        self.pipeline = pipeline
        self.watcher = watcher
        self.settings = pipeline.settings
        self.sender = Sender(websocket)
        self.start = StartMessage(
            type="start",
            session_id=checked_session_id(websocket.query_params.get("session_id")),
        )
        self.audio = bytearray()
        self.overflow = False

    @property
    def max_audio_bytes(self) -> int:
        return int(self.settings.gateway_max_audio_seconds * self.start.sample_rate * 2)

    @property
    def output_rate(self) -> int:
        return self.start.output_sample_rate or self.settings.gateway_sample_rate

    async def run(self) -> None:
        await self.sender.json(
            {
                "type": "ready",
                "session_id": self.start.session_id,
                "output_sample_rate": self.output_rate,
                "format": "pcm_s16le",
            }
        )
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                self._take_audio(message["bytes"])
            elif message.get("text") is not None:
                try:
                    await self._control(message["text"])
                except ApiError as error:
                    await self.sender.error(error)

    def _take_audio(self, data: bytes) -> None:
        if len(self.audio) + len(data) > self.max_audio_bytes:
            # Reported at the end of the utterance, where the client waits for an answer.
            self.overflow = True
            return
        self.audio.extend(data)

    async def _control(self, text: str) -> None:
        try:
            payload = json.loads(text)
        except ValueError:
            raise ApiError(400, "malformed_json", "the message is not valid JSON") from None
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "start":
            try:
                start = StartMessage.model_validate(payload)
            except ValidationError as exc:
                raise validation_error(exc) from None  # type: ignore[arg-type]
            checked_session_id(start.session_id)
            self.start = start.model_copy(
                update={"session_id": start.session_id or self.start.session_id}
            )
            self.audio.clear()
            self.overflow = False
        elif kind == "end":
            audio, overflow = bytes(self.audio), self.overflow
            self.audio.clear()
            self.overflow = False
            if overflow:
                raise ApiError(
                    413,
                    "audio_too_long",
                    f"the utterance is longer than {self.settings.gateway_max_audio_seconds:g} s",
                )
            await self._turn(audio)
        else:
            raise ApiError(
                400, "unknown_message", f"unknown message type {kind!r}; send start or end"
            )

    async def _turn(self, pcm: bytes) -> None:
        with counted_turn(self.pipeline.metrics, "stream"):
            started = time.perf_counter()
            routes = self.watcher.current
            if routes is None:
                raise ApiError(503, "no_routes", "the gateway has no valid routes file yet")
            wav, seconds = await asyncio.to_thread(pcm_utterance, pcm, self.start.sample_rate)
            utterance = Utterance(
                wav, seconds, self.start.language, self.output_rate, self.start.session_id
            )
            report = await self.pipeline.run(
                routes, utterance, StreamListener(self.sender), streaming=True, started=started
            )
        self.start = self.start.model_copy(update={"session_id": report.session_id})
        await self.sender.json({"type": "done", **report.as_json()})


async def serve_stream(websocket: WebSocket, pipeline: Pipeline, watcher: RoutesWatcher) -> None:
    token = _correlation_id.set(pick_correlation_id(list(websocket.scope.get("headers", []))))
    try:
        await websocket.accept()
        try:
            session = StreamSession(websocket, pipeline, watcher)
        except ApiError as error:
            await Sender(websocket).error(error)
            await websocket.close(code=1008)
            return
        with contextlib.suppress(WebSocketDisconnect):
            await session.run()
    except Exception:
        log.exception("stream failed")
        with contextlib.suppress(Exception):
            await websocket.close(code=1011)
    finally:
        _correlation_id.reset(token)
