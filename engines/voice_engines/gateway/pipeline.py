"""A conversation turn, one stage after the other: speech to text, the language model
(with the session's history), text to speech of the whole reply. The streaming variant
(streaming.py) overlaps the last two; both share the pieces here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from voice_engines.common.errors import ApiError
from voice_engines.gateway.adapters.base import LlmDelta
from voice_engines.gateway.metrics import GatewayMetrics
from voice_engines.gateway.routes import Routes, Stage, StageRoute
from voice_engines.gateway.sessions import Session, SessionStore
from voice_engines.gateway.settings import GatewaySettings
from voice_engines.gateway.stages import Stages


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


@dataclass
class Utterance:
    wav: bytes  # 16 kHz mono 16-bit
    seconds: float
    language: str | None
    sample_rate: int  # of the reply audio
    session_id: str | None


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

    async def transcribe(self, routes: Routes, utterance: Utterance, report: TurnReport) -> str:
        started = time.perf_counter()
        route, transcript = await self.stages.transcribe(routes, utterance.wav, utterance.language)
        report.timings["stt_ms"] = ms(time.perf_counter() - started)
        report.served("stt", route)
        report.transcript = transcript.text
        report.usage["stt_audio_seconds"] = round(utterance.seconds, 3)
        self.metrics.stt_audio_seconds.labels(*self.metrics.usage_labels(route)).inc(
            utterance.seconds
        )
        if not transcript.text:
            raise ApiError(422, "no_speech", "no speech was recognized in the audio", field="file")
        return transcript.text

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

    async def turn(self, routes: Routes, utterance: Utterance) -> tuple[TurnReport, bytes]:
        """The whole turn, one stage after the other: (report, reply PCM)."""
        started = time.perf_counter()
        report = TurnReport()
        text = await self.transcribe(routes, utterance, report)
        session = self.sessions.get(utterance.session_id)
        report.session_id = session.id
        # Turns of one conversation are answered in order, never interleaved.
        async with session.lock:
            reply = "".join([t async for t in self.reply_tokens(routes, session, text, report)])
            reply = reply.strip()
            if not reply:
                raise ApiError(502, "empty_reply", "the language model answered with no text")
            report.reply = reply
            tts_started = time.perf_counter()
            route, chunks = await self.stages.speak(routes, reply, utterance.sample_rate)
            self.count_speech(route, reply, report)
            pcm = b"".join([chunk async for chunk in chunks])
            report.timings["tts_ms"] = ms(time.perf_counter() - tts_started)
            session.remember(text, reply)
            report.turns = len(session.turns)
        total = time.perf_counter() - started
        report.timings["total_ms"] = ms(total)
        # The client gets its audio with the answer: the first audio is the last.
        self.metrics.first_audio.labels(self.metrics.agent, "turn").observe(total)
        self.metrics.turn_duration.labels(self.metrics.agent, "turn").observe(total)
        return report, pcm
