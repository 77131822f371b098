"""WebSocket /v1/stream: a live conversation. The client streams PCM frames; the gateway
finds the end of each utterance (voice activity detection, or the client's end message),
answers with the transcript, the reply's tokens as the model writes them and the reply's
audio a sentence at a time, and keeps reading audio while it speaks, so the user can
interrupt: the reply stops (speech synthesis and the model's generation, whose streaming
requests are closed), and the history keeps only what the user heard.

Client -> server
  {"type": "start", "session_id"?, "sample_rate"? (of the frames, default 16000),
   "language"?, "output_sample_rate"?, "turn_detection"? ("vad" | "manual")}
                                             optional; settings for what follows
  binary frames                              16-bit little-endian mono PCM
  {"type": "end"}                            end of utterance (manual; in vad mode it ends
                                             the utterance in progress at once)
  {"type": "interrupt"}                      stop the reply now
Server -> client
  {"type": "ready", "session_id", "output_sample_rate", "format": "pcm_s16le",
   "turn_detection"}
  {"type": "speech_started", "at_ms"}        vad: the detector heard speech begin
  {"type": "interim", "text", "audio_ms"}    what was said so far (vad, while speaking)
  {"type": "speech_stopped", "at_ms", "reason"}  vad: the utterance ended
  {"type": "transcript", "text"}             the final transcript of the utterance
  {"type": "token", "text"}                  each piece of the reply
  {"type": "sentence", "index", "text"}      then that sentence's audio as binary frames
  {"type": "reply", "text"}                  the model finished
  {"type": "done", "session_id", "turns", "transcript", "reply", "providers",
   "timings", "usage"}                       the last audio has been sent
  {"type": "interrupted", "session_id", "by", "sent_audio_ms", "played_audio_ms",
   "sentences_sent", "kept"}                 the reply was stopped; kept is what the
                                             history keeps of it
  {"type": "error", "error": {"code", "message", "field", "correlation_id"}}
A connection carries any number of turns, all in one session; replies are given in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voice_engines.common.correlation import _correlation_id, pick_correlation_id
from voice_engines.common.errors import ApiError, error_body, validation_error
from voice_engines.gateway.access import SUBPROTOCOL
from voice_engines.gateway.audio import STT_RATE, PcmResampler, pcm_seconds, pcm_utterance
from voice_engines.gateway.pipeline import (
    Heard,
    Pipeline,
    TurnListener,
    Utterance,
    counted_turn,
    ms,
)
from voice_engines.gateway.routes import Routes, RoutesWatcher
from voice_engines.gateway.sessions import checked_session_id
from voice_engines.gateway.turns import (
    Endpointer,
    NoiseIgnored,
    SileroScorer,
    SpeechConfirmed,
    SpeechPaused,
    SpeechStarted,
    TurnDetection,
    UtteranceEnded,
)

log = logging.getLogger(__name__)

MAX_VAD_FRAME_BYTES = 256 * 1024


class StartMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    session_id: str | None = None
    sample_rate: int = Field(16_000, ge=8000, le=48000)
    language: str | None = Field(None, max_length=16)
    output_sample_rate: int | None = Field(None, ge=8000, le=48000)
    turn_detection: Literal["vad", "manual"] | None = None


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


@dataclass
class _Spoken:
    index: int
    text: str
    starts: float  # when the client starts playing it, if it plays audio as it arrives
    seconds: float = 0.0


@dataclass
class Playback:
    """Where the client's playback is, assuming it plays each frame as soon as it
    arrives and after the one before: a reply is sent faster than it is spoken, so what
    was sent is not what was heard."""

    rate: int
    sentences: list[_Spoken] = field(default_factory=list)
    ends: float = 0.0  # when the audio sent so far will have been played
    sent_seconds: float = 0.0

    def sentence(self, index: int, text: str, now: float) -> None:
        self.sentences.append(_Spoken(index, text, max(now, self.ends)))

    def audio(self, pcm_bytes: int, now: float) -> None:
        seconds = pcm_seconds(pcm_bytes, self.rate)
        self.ends = max(now, self.ends) + seconds
        self.sent_seconds += seconds
        if self.sentences:
            self.sentences[-1].seconds += seconds

    def played_seconds(self, now: float) -> float:
        return min(self.sent_seconds, sum(_played(s, now) for s in self.sentences))

    def heard_text(self, now: float) -> str:
        """The sentences played whole, then the words of the one being played in
        proportion to how much of it was played."""
        words: list[str] = []
        for sentence in self.sentences:
            played = _played(sentence, now)
            if sentence.seconds and played >= sentence.seconds:
                words.extend(sentence.text.split())
                continue
            if sentence.seconds and played > 0:
                part = sentence.text.split()
                words.extend(part[: int(len(part) * played / sentence.seconds)])
            break
        return " ".join(words)


def _played(sentence: _Spoken, now: float) -> float:
    return max(0.0, min(sentence.seconds, now - sentence.starts))


class StreamListener(TurnListener):
    """A turn as the stream's messages: text as JSON, the reply's audio as binary frames;
    what was sent is tracked for an interruption."""

    def __init__(self, sender: Sender, output_rate: int) -> None:
        self.sender = sender
        self.playback = Playback(output_rate)
        self.stopped_at: float | None = None

    async def transcript(self, text: str) -> None:
        await self.sender.json({"type": "transcript", "text": text})

    async def token(self, text: str) -> None:
        await self.sender.json({"type": "token", "text": text})

    async def sentence(self, index: int, text: str) -> None:
        self.playback.sentence(index, text, time.monotonic())
        await self.sender.json({"type": "sentence", "index": index, "text": text})

    async def audio(self, pcm: bytes) -> None:
        await self.sender.audio(pcm)
        self.playback.audio(len(pcm), time.monotonic())

    async def reply(self, text: str) -> None:
        await self.sender.json({"type": "reply", "text": text})

    def interrupted_reply(self) -> str:
        self.stopped_at = self.stopped_at or time.monotonic()
        return self.playback.heard_text(self.stopped_at)

    def progress(self) -> dict[str, Any]:
        now = self.stopped_at or time.monotonic()
        return {
            "sent_audio_ms": ms(self.playback.sent_seconds),
            "played_audio_ms": ms(self.playback.played_seconds(now)),
            "sentences_sent": len(self.playback.sentences),
            "kept": self.playback.heard_text(now),
        }


@dataclass
class _Reply:
    task: asyncio.Task[None]
    listener: StreamListener


class StreamSession:
    def __init__(self, websocket: WebSocket, pipeline: Pipeline, watcher: RoutesWatcher) -> None:
        self.websocket = websocket
        self.pipeline = pipeline
        self.watcher = watcher
        self.settings = pipeline.settings
        self.sender = Sender(websocket)
        # The session is named from the start, so an interrupted first turn has a history
        # to keep its heard part in.
        self.start = StartMessage(
            type="start",
            session_id=checked_session_id(websocket.query_params.get("session_id"))
            or uuid.uuid4().hex,
        )
        self.turns = self._turn_detection()
        self.audio = bytearray()  # manual: the utterance so far, at 16 kHz
        self.overflow = False
        self.resampler = PcmResampler(self.start.sample_rate, STT_RATE)
        self.endpointer: Endpointer | None = None
        self.replies: list[_Reply] = []  # running or waiting, in order
        self.interim: asyncio.Task[None] | None = None
        self.interim_at_ms = 0.0
        self.tail: asyncio.Task[Heard] | None = None  # the decode started at a pause

    def _turn_detection(self, mode: str | None = None) -> TurnDetection:
        routes = self.watcher.current
        config = routes.gateway.turn_detection if routes else TurnDetection()
        return config.model_copy(update={"mode": mode}) if mode else config

    @property
    def vad(self) -> bool:
        return self.turns.mode == "vad"

    @property
    def max_audio_bytes(self) -> int:
        return int(self.settings.gateway_max_audio_seconds * STT_RATE * 2)

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
                "turn_detection": self.turns.mode,
            }
        )
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    if message.get("bytes") is not None:
                        await self._take_audio(message["bytes"])
                    elif message.get("text") is not None:
                        await self._control(message["text"])
                except ApiError as error:
                    await self.sender.error(error)
        finally:
            # The client is gone: nothing it started may keep an engine busy.
            for task in self._tasks():
                task.cancel()

    def _tasks(self) -> list[asyncio.Task[Any]]:
        tasks: list[asyncio.Task[Any]] = [reply.task for reply in self.replies]
        return tasks + [t for t in (self.interim, self.tail) if t is not None]

    # -- audio -------------------------------------------------------------------------

    async def _take_audio(self, data: bytes) -> None:
        if self.vad and len(data) > MAX_VAD_FRAME_BYTES:
            # The detector runs on the event loop: a huge frame would hold up every other
            # connection for as long as it takes to score (6 ms per second of audio).
            raise ApiError(
                413,
                "frame_too_large",
                f"with voice activity detection a frame is at most {MAX_VAD_FRAME_BYTES} bytes "
                f"({len(data)} sent); send the audio as it is captured, e.g. 20-100 ms frames",
            )
        pcm = self.resampler.feed(data)
        if not self.vad:
            if len(self.audio) + len(pcm) > self.max_audio_bytes:
                # Reported at the end of the utterance, where the client waits for an answer.
                self.overflow = True
                return
            self.audio.extend(pcm)
            return
        if self.endpointer is None:
            self.endpointer = Endpointer(self.turns, SileroScorer())
        for event in self.endpointer.feed(pcm):
            await self._turn_event(event)
        self._maybe_interim()

    async def _turn_event(self, event: object) -> None:
        if isinstance(event, SpeechStarted):
            await self.sender.json({"type": "speech_started", "at_ms": round(event.at_ms)})
        elif isinstance(event, SpeechConfirmed):
            self.interim_at_ms = event.at_ms
            if self.turns.barge_in:
                await self._interrupt("speech")
        elif isinstance(event, SpeechPaused):
            # Decoded while the silence is timed: when it ends the utterance with nothing
            # said since, the transcript is ready (or nearly) at its end. An interim
            # still waiting at the transcriber would only delay it.
            self._drop_interim()
            self._drop_tail()
            self.tail = asyncio.create_task(self._hear(event.pcm))
        elif isinstance(event, UtteranceEnded):
            await self.sender.json(
                {"type": "speech_stopped", "at_ms": round(event.at_ms), "reason": event.reason}
            )
            self._drop_interim()
            tail = self.tail if event.same_as_paused else None
            if tail is None:
                self._drop_tail()
            self.tail = None
            self.turns = self._turn_detection(self.turns.mode)
            assert self.endpointer is not None
            self.endpointer.config = self.turns
            endpoint_ms = event.at_ms - event.speech_end_ms
            self._reply(event.pcm, tail, endpoint_ms)
        elif isinstance(event, NoiseIgnored):
            log.debug("noise ignored", extra={"speech_ms": event.speech_ms})

    def _maybe_interim(self) -> None:
        endpointer = self.endpointer
        if (
            endpointer is None
            or self.turns.interim_ms <= 0
            or not endpointer.confirmed
            or (self.interim is not None and not self.interim.done())
            or (self.tail is not None and not self.tail.done())
            or endpointer.elapsed_ms - self.interim_at_ms < self.turns.interim_ms
        ):
            return
        self.interim_at_ms = endpointer.elapsed_ms
        self.interim = asyncio.create_task(self._send_interim(endpointer.utterance_pcm()))

    async def _hear(self, pcm: bytes) -> Heard:
        routes = self._routes()
        wav, seconds = await asyncio.to_thread(pcm_utterance, pcm, STT_RATE)
        return await self.pipeline.hear(routes, wav, seconds, self.start.language)

    async def _send_interim(self, pcm: bytes) -> None:
        try:
            heard = await self._hear(pcm)
        except ApiError as error:
            # An interim is a courtesy: the final transcript reports the stage's failure.
            log.info("interim transcript failed: %s", error.message)
            return
        if heard.text:
            audio_ms = round(pcm_seconds(len(pcm), STT_RATE) * 1000)
            await self.sender.json({"type": "interim", "text": heard.text, "audio_ms": audio_ms})

    def _drop_interim(self) -> None:
        if self.interim is not None:
            self.interim.cancel()
            self.interim = None

    def _drop_tail(self) -> None:
        if self.tail is not None:
            self.tail.cancel()
            self.tail = None

    # -- control messages --------------------------------------------------------------

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
            self.turns = self._turn_detection(start.turn_detection)
            self.resampler = PcmResampler(self.start.sample_rate, STT_RATE)
            self.audio.clear()
            self.overflow = False
            self.endpointer = None
            self._drop_interim()
            self._drop_tail()
        elif kind == "end":
            if self.vad:
                ended = self.endpointer.finish() if self.endpointer else None
                # Nothing pending: the detector already ended the utterance (or heard none).
                if ended is not None:
                    self._drop_interim()
                    self._drop_tail()
                    self._reply(ended.pcm, None, 0.0)
                return
            pcm, overflow = bytes(self.audio) + self.resampler.flush(), self.overflow
            self.resampler = PcmResampler(self.start.sample_rate, STT_RATE)
            self.audio.clear()
            self.overflow = False
            if overflow:
                raise ApiError(
                    413,
                    "audio_too_long",
                    f"the utterance is longer than {self.settings.gateway_max_audio_seconds:g} s",
                )
            if len(pcm) < 2:
                raise ApiError(
                    400, "empty_audio", "no audio arrived before the end of the utterance"
                )
            self._reply(pcm, None, 0.0)
        elif kind == "interrupt":
            await self._interrupt("client")
        else:
            raise ApiError(
                400,
                "unknown_message",
                f"unknown message type {kind!r}; send start, end or interrupt",
            )

    # -- replies -----------------------------------------------------------------------

    def _routes(self) -> Routes:
        routes = self.watcher.current
        if routes is None:
            raise ApiError(503, "no_routes", "the gateway has no valid routes file yet")
        return routes

    def _reply(self, pcm: bytes, heard: asyncio.Task[Heard] | None, endpoint_ms: float) -> None:
        """Answers the utterance after the replies before it, without holding up the
        audio that keeps arriving."""
        listener = StreamListener(self.sender, self.output_rate)
        before = self.replies[-1].task if self.replies else None
        task = asyncio.create_task(
            self._answer(pcm, heard, endpoint_ms, listener, before, time.perf_counter())
        )
        reply = _Reply(task, listener)
        self.replies.append(reply)
        task.add_done_callback(lambda _: self.replies.remove(reply))

    async def _answer(
        self,
        pcm: bytes,
        heard_task: asyncio.Task[Heard] | None,
        endpoint_ms: float,
        listener: StreamListener,
        before: asyncio.Task[None] | None,
        ended: float,
    ) -> None:
        if before is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(before)
        try:
            with counted_turn(self.pipeline.metrics, "stream"):
                routes = self._routes()
                heard: Heard | None = None
                if heard_task is not None:
                    with contextlib.suppress(ApiError):
                        heard = await heard_task
                heard_after = time.perf_counter() - ended
                wav, seconds = await asyncio.to_thread(pcm_utterance, pcm, STT_RATE)
                start = self.start
                utterance = Utterance(
                    wav, seconds, start.language, self.output_rate, start.session_id, heard
                )
                report = await self.pipeline.run(
                    routes, utterance, listener, streaming=True, started=ended
                )
            # From the end of the utterance to its transcript: what endpointing and
            # decoding add after the user stopped, besides the silence itself.
            report.timings["stt_tail_ms"] = (
                ms(heard_after) if heard else report.timings.get("stt_ms", 0.0)
            )
            report.timings["endpoint_ms"] = round(endpoint_ms, 1)
            await self.sender.json({"type": "done", **report.as_json()})
        except ApiError as error:
            await self.sender.error(error)
        except Exception:
            log.exception("a streamed turn failed")
            await self.sender.error(ApiError(500, "internal_error", "the turn failed"))

    async def _interrupt(self, by: Literal["speech", "client"]) -> None:
        """Stops every reply in progress or waiting; the client is told what it got."""
        replies = list(self.replies)
        if not replies:
            return
        for reply in replies:
            reply.listener.stopped_at = time.monotonic()
            reply.task.cancel()
        for reply in replies:
            with contextlib.suppress(BaseException):
                await reply.task
        metrics = self.pipeline.metrics
        metrics.interruptions.labels(metrics.agent, by).inc()
        await self.sender.json(
            {
                "type": "interrupted",
                "session_id": self.start.session_id,
                "by": by,
                **replies[0].listener.progress(),
            }
        )


@contextlib.asynccontextmanager
async def guarded(
    websocket: WebSocket, what: str, logger: logging.Logger = log
) -> AsyncIterator[None]:
    """The life of one WebSocket endpoint's connection: its correlation id, and an error
    logged and answered by closing with 1011 rather than left to the server."""
    token = _correlation_id.set(pick_correlation_id(list(websocket.scope.get("headers", []))))
    try:
        yield
    except Exception:
        logger.exception("%s failed", what)
        with contextlib.suppress(Exception):
            await websocket.close(code=1011)
    finally:
        _correlation_id.reset(token)


async def serve_stream(websocket: WebSocket, pipeline: Pipeline, watcher: RoutesWatcher) -> None:
    async with guarded(websocket, "stream"):
        # A browser that offered its token as a subprotocol needs one chosen in return.
        offered = websocket.scope.get("subprotocols", [])
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        try:
            session = StreamSession(websocket, pipeline, watcher)
        except ApiError as error:
            await Sender(websocket).error(error)
            await websocket.close(code=1008)
            return
        with contextlib.suppress(WebSocketDisconnect):
            await session.run()
