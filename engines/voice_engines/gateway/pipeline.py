"""A conversation turn, for POST /v1/turn and the WebSocket stream alike: speech to
text, the language model (with the session's history) and text to speech of the reply,
cut into pieces as the model writes it. Streamed, a piece is each sentence, spoken while
the model writes the next; over HTTP the client gets one answer, so the whole reply is
one piece, spoken in one call once the model has finished. What the turn hears and says
on the way goes to a TurnListener, the only part the two routes do differently."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from voice_engines.common.errors import ApiError
from voice_engines.gateway.adapters.base import LlmDelta
from voice_engines.gateway.metrics import GatewayMetrics
from voice_engines.gateway.routes import Routes, Stage, StageRoute
from voice_engines.gateway.sentences import SentenceSplitter
from voice_engines.gateway.sessions import Session, SessionStore
from voice_engines.gateway.settings import GatewaySettings
from voice_engines.gateway.stages import Stages


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


@dataclass(frozen=True)
class Heard:
    """A transcription: what was said, who heard it and how long that took."""

    text: str
    route: StageRoute
    seconds: float  # the STT call
    audio_seconds: float


@dataclass
class Utterance:
    wav: bytes  # 16 kHz mono 16-bit
    seconds: float
    language: str | None
    sample_rate: int  # of the reply audio
    session_id: str | None
    # Transcribed already (the stream decodes while the user is still silent): the turn
    # starts with the language model.
    heard: Heard | None = None


@dataclass
class TurnReport:
    """What a turn did: which provider served each stage, how long each took, and what
    it used."""

    session_id: str = ""
    turns: int = 0
    transcript: str = ""
    reply: str = ""
    providers: dict[str, dict[str, str]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)

    def served(self, stage: Stage, route: StageRoute) -> None:
        self.providers[stage] = {"provider": route.name, "revision": route.revision}

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "turns": self.turns,
            "transcript": self.transcript,
            "reply": self.reply,
            "providers": self.providers,
            "timings": self.timings,
            "usage": self.usage,
        }


class Pipeline:
    def __init__(
        self,
        settings: GatewaySettings,
        stages: Stages,
        sessions: SessionStore,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.stages = stages
        self.sessions = sessions
        self.metrics = metrics

    async def hear(
        self, routes: Routes, wav: bytes, audio_seconds: float, language: str | None
    ) -> Heard:
        """One STT call (an interim transcript is one too: it is counted as used)."""
        started = time.perf_counter()
        route, transcript = await self.stages.transcribe(routes, wav, language)
        self.metrics.stt_audio_seconds.labels(*self.metrics.usage_labels(route)).inc(audio_seconds)
        return Heard(transcript.text, route, time.perf_counter() - started, audio_seconds)

    async def transcribe(self, routes: Routes, utterance: Utterance, report: TurnReport) -> str:
        heard = utterance.heard or await self.hear(
            routes, utterance.wav, utterance.seconds, utterance.language
        )
        report.timings["stt_ms"] = ms(heard.seconds)
        report.served("stt", heard.route)
        report.transcript = heard.text
        report.usage["stt_audio_seconds"] = round(heard.audio_seconds, 3)
        if not heard.text:
            raise ApiError(422, "no_speech", "no speech was recognized in the audio", field="file")
        return heard.text

    async def reply_tokens(
        self, routes: Routes, session: Session, user_text: str, report: TurnReport
    ) -> AsyncIterator[str]:
        """The reply as the model writes it; the timings and usage land in report."""
        started = time.perf_counter()
        route, deltas = await self.stages.chat(routes, session.messages(), user_text)
        report.served("llm", route)
        usage: LlmDelta | None = None
        pieces = 0
        async for delta in deltas:
            if delta.output_tokens is not None:
                usage = delta
            if delta.text:
                if pieces == 0:
                    report.timings["llm_first_token_ms"] = ms(time.perf_counter() - started)
                pieces += 1
                yield delta.text
        report.timings["llm_ms"] = ms(time.perf_counter() - started)
        # Providers that report no usage: each streamed piece is about one token.
        input_tokens = usage.input_tokens if usage else None
        output_tokens = usage.output_tokens if usage and usage.output_tokens else pieces
        labels = self.metrics.usage_labels(route)
        if input_tokens:
            self.metrics.llm_tokens.labels(*labels, "input").inc(input_tokens)
            report.usage["llm_input_tokens"] = input_tokens
        self.metrics.llm_tokens.labels(*labels, "output").inc(output_tokens)
        report.usage["llm_output_tokens"] = output_tokens

    def count_speech(self, route: StageRoute, text: str, report: TurnReport) -> None:
        report.served("tts", route)
        self.metrics.tts_characters.labels(*self.metrics.usage_labels(route)).inc(len(text))
        report.usage["tts_characters"] = report.usage.get("tts_characters", 0) + len(text)

    async def run(
        self,
        routes: Routes,
        utterance: Utterance,
        listener: TurnListener,
        *,
        streaming: bool,
        started: float | None = None,
    ) -> TurnReport:
        """The whole turn, timed from started (default: now); its audio goes to the
        listener, and the report is what it did."""
        turn = _Turn(self, routes, utterance, listener, streaming, started)
        return await turn.run()


class TurnListener:
    """Hears a turn as it happens; each method is awaited before the turn goes on. The
    default hears nothing."""

    async def transcript(self, text: str) -> None:
        pass

    async def token(self, text: str) -> None:
        pass

    async def sentence(self, index: int, text: str) -> None:
        pass

    async def audio(self, pcm: bytes) -> None:
        pass

    async def reply(self, text: str) -> None:
        pass

    def interrupted_reply(self) -> str | None:
        """Asked when the turn is cancelled: the part of the reply the user heard, to be
        kept in the history; None keeps nothing of the turn."""
        return None


class _WholeReply:
    """A splitter that cuts nothing: the reply is one piece, at the end."""

    def __init__(self) -> None:
        self._text = ""

    def feed(self, text: str) -> list[str]:
        self._text += text
        return []

    def flush(self) -> str | None:
        return self._text.strip() or None


class _Turn:
    """One run of Pipeline.run: the model's pieces go through a queue to the speaker,
    so the two overlap when streaming."""

    def __init__(
        self,
        pipeline: Pipeline,
        routes: Routes,
        utterance: Utterance,
        listener: TurnListener,
        streaming: bool,
        started: float | None,
    ) -> None:
        self.pipeline = pipeline
        self.routes = routes
        self.utterance = utterance
        self.listener = listener
        self.mode: Literal["stream", "turn"] = "stream" if streaming else "turn"
        self.splitter: SentenceSplitter | _WholeReply = (
            SentenceSplitter(first_words=pipeline.settings.gateway_first_piece_words)
            if streaming
            else _WholeReply()
        )
        self.started = time.perf_counter() if started is None else started
        self.report = TurnReport()
        self.pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self.reply: list[str] = []
        self.first_audio: float | None = None
        self.tts_seconds = 0.0

    async def run(self) -> TurnReport:
        text = await self.pipeline.transcribe(self.routes, self.utterance, self.report)
        await self.listener.transcript(text)
        session = self.pipeline.sessions.get(self.utterance.session_id)
        self.report.session_id = session.id
        # Turns of one conversation are answered in order, never interleaved.
        async with session.lock:
            try:
                await self._think_and_speak(session, text)
            except asyncio.CancelledError:
                # Barge-in: the history keeps what the user heard of the reply.
                heard = self.listener.interrupted_reply()
                if heard is not None:
                    session.remember(text, heard)
                raise
            self.report.reply = "".join(self.reply).strip()
            session.remember(text, self.report.reply)
            self.report.turns = len(session.turns)
        self._finish()
        return self.report

    async def _think_and_speak(self, session: Session, text: str) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._think(session, text))
                group.create_task(self._speak())
        except* Exception as errors:
            # One side failed and the other was cancelled: the failure is the turn's, the
            # client's own error first.
            failures = errors.exceptions
            raise next((e for e in failures if isinstance(e, ApiError)), failures[0]) from None

    async def _think(self, session: Session, text: str) -> None:
        timings = self.report.timings
        try:
            async for token in self.pipeline.reply_tokens(self.routes, session, text, self.report):
                self.reply.append(token)
                await self.listener.token(token)
                for sentence in self.splitter.feed(token):
                    if "first_piece_ms" not in timings:
                        timings["first_piece_ms"] = ms(time.perf_counter() - self.started)
                    self.pieces.put_nowait(sentence)
            if rest := self.splitter.flush():
                self.pieces.put_nowait(rest)
        finally:
            self.pieces.put_nowait(None)
        reply = "".join(self.reply).strip()
        if not reply:
            raise ApiError(502, "empty_reply", "the language model answered with no text")
        await self.listener.reply(reply)

    async def _speak(self) -> None:
        index = 0
        while (piece := await self.pieces.get()) is not None:
            call_started = time.perf_counter()
            route, chunks = await self.pipeline.stages.speak(
                self.routes, piece, self.utterance.sample_rate
            )
            self.pipeline.count_speech(route, piece, self.report)
            await self.listener.sentence(index, piece)
            async for chunk in chunks:
                if self.first_audio is None:
                    self.first_audio = time.perf_counter() - self.started
                await self.listener.audio(chunk)
            self.tts_seconds += time.perf_counter() - call_started
            index += 1

    def _finish(self) -> None:
        total = time.perf_counter() - self.started
        metrics, timings = self.pipeline.metrics, self.report.timings
        if self.mode == "turn":
            # The client gets its audio with the answer: the first audio is the last.
            self.first_audio = total
        elif self.first_audio is not None:
            timings["first_audio_ms"] = ms(self.first_audio)
        if self.first_audio is not None:
            metrics.first_audio.labels(metrics.agent, self.mode).observe(self.first_audio)
        timings["tts_ms"] = ms(self.tts_seconds)
        timings["total_ms"] = ms(total)
        metrics.turn_duration.labels(metrics.agent, self.mode).observe(total)


@contextlib.contextmanager
def counted_turn(metrics: GatewayMetrics, mode: Literal["stream", "turn"]) -> Iterator[None]:
    """Counts a turn by how it ended (ok, the error code, or aborted), over whatever part
    of the request its route counts as the turn."""
    outcome = "ok"
    try:
        yield
    except ApiError as error:
        outcome = error.code
        raise
    except BaseException:
        outcome = "aborted"
        raise
    finally:
        metrics.turns.labels(metrics.agent, mode, outcome).inc()
