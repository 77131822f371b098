"""The TTS service: POST /synthesize, POST /v1/audio/speech (OpenAI-compatible),
GET /voices; plus /health, /ready and /metrics from common."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal, cast

import numpy as np
import soxr
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field

from voice_engines.common.app import (
    Executor,
    build_engine_app,
    from_state,
    model_card,
    model_list,
    require_ready,
)
from voice_engines.common.audio import encode, pcm16, resample, streaming_wav_header
from voice_engines.common.errors import ApiError, error_responses
from voice_engines.common.metrics import RequestMetrics, histogram
from voice_engines.common.text import check_text, shortened
from voice_engines.tts.backends.piper import PiperBackend
from voice_engines.tts.settings import TtsEngineSettings

TEXT_BUCKETS = (10, 25, 50, 100, 250, 500, 1000, 2000, 4000, 8000)
AudioFormat = Literal["wav", "pcm", "flac"]
MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}
# Clients that always send a voice (OpenAI's require one) may send this to mean "the
# configured voice".
DEFAULT_VOICE = "default"
# Longer than any voice name; a longer one is refused as invalid before it is looked up.
MAX_VOICE_CHARS = 256
VoiceName = Annotated[str | None, Field(max_length=MAX_VOICE_CHARS)]


class SynthesizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    voice: VoiceName = None
    speed: float | None = Field(None, ge=0.25, le=4.0)
    sample_rate: int | None = Field(None, ge=8000, le=48000)
    format: AudioFormat = "wav"
    # Sentence-level streaming: a chunked response whose first sentence leaves as soon as
    # it is synthesized.
    stream: bool = False


class SpeechRequest(BaseModel):
    """OpenAI's /v1/audio/speech body; unknown fields are ignored, as OpenAI adds some."""

    model_config = ConfigDict(extra="ignore")

    input: str
    voice: VoiceName = None
    model: str | None = None
    response_format: Literal["wav", "pcm", "flac", "mp3", "opus", "aac"] = "wav"
    speed: float | None = Field(None, ge=0.25, le=4.0)


class TtsEngine:
    def __init__(self, settings: TtsEngineSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.voice: PiperBackend | None = None
        self.requests = RequestMetrics(registry, "tts_synthesis", "Synthesis")
        self.text_length = histogram(
            registry, "tts_text_length_chars", "Length of synthesized text", TEXT_BUCKETS
        )

    def load(self) -> None:
        voice = PiperBackend(
            self.settings.voice_name, self.settings.voice_path, self.settings.voice_config
        )
        for _ in voice.sentences("Ready.", 1.0):
            pass
        self.voice = voice

    def describe(self) -> dict[str, Any]:
        return {"voice": self.settings.voice_name}

    def check(self, text: str, voice: str | None) -> PiperBackend:
        check_text(text, "text")
        if not text.strip():
            raise ApiError(400, "empty_text", "text is empty", field="text")
        if len(text) > self.settings.tts_max_text_chars:
            raise ApiError(
                413,
                "text_too_large",
                f"text is {len(text)} characters; the limit is {self.settings.tts_max_text_chars}",
                field="text",
            )
        assert self.voice is not None
        if voice not in (None, DEFAULT_VOICE, self.voice.info.name):
            raise ApiError(
                400,
                "unknown_voice",
                f"voice {shortened(voice)} is not served here; GET /voices lists the voices",
                field="voice",
            )
        return self.voice

    def synthesize(self, voice: PiperBackend, text: str, speed: float, rate: int) -> np.ndarray:
        parts = list(voice.sentences(text, speed))
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return resample(audio, voice.info.sample_rate, rate)

    def stream_pcm(
        self, voice: PiperBackend, text: str, speed: float, rate: int
    ) -> Iterator[bytes]:
        # One resampler across sentences, so their joins carry no filter edge effects.
        resampler = (
            soxr.ResampleStream(voice.info.sample_rate, rate, 1, dtype="float32")
            if rate != voice.info.sample_rate
            else None
        )
        for audio in voice.sentences(text, speed):
            yield pcm16(resampler.resample_chunk(audio) if resampler else audio)
        if resampler is not None:
            yield pcm16(resampler.resample_chunk(np.zeros(0, np.float32), last=True))


Engine = Annotated[TtsEngine, Depends(from_state("engine"))]
router = APIRouter()
SPEAK_ERRORS = error_responses(400, 408, 413, 422, 429, 503)


async def _speak(
    request: Request,
    engine: TtsEngine,
    executor: Executor,
    text: str,
    voice_name: str | None,
    speed: float | None,
    rate: int | None,
    fmt: AudioFormat,
    stream: bool,
) -> Response:
    require_ready(request.app)
    voice = engine.check(text, voice_name)
    speed = speed or engine.settings.tts_speed
    rate = rate or voice.info.sample_rate
    headers = {"X-Sample-Rate": str(rate)}
    if stream and fmt in ("wav", "pcm"):
        chunks = await executor.stream(engine.stream_pcm, voice, text, speed, rate)
        return StreamingResponse(
            _spoken(
                engine,
                len(text),
                _with_header(chunks, streaming_wav_header(rate) if fmt == "wav" else b""),
            ),
            media_type=MEDIA_TYPES[fmt],
            headers=headers,
        )
    audio = await executor.run(engine.synthesize, voice, text, speed, rate)
    data = (
        await executor.run(encode, audio, rate, fmt) if fmt == "flac" else encode(audio, rate, fmt)
    )
    engine.text_length.observe(len(text))
    return Response(data, media_type=MEDIA_TYPES[fmt], headers=headers)


async def _with_header(chunks: AsyncIterator[bytes], header: bytes) -> AsyncIterator[bytes]:
    # The header rides with the first sentence so the first bytes a client gets are
    # playable audio.
    async for chunk in chunks:
        yield header + chunk
        header = b""
    if header:
        yield header


async def _spoken(
    engine: TtsEngine, characters: int, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """A stream counted as synthesized text only once all of it was made and sent."""
    async for chunk in chunks:
        yield chunk
    engine.text_length.observe(characters)


@router.post("/synthesize", responses=SPEAK_ERRORS)
async def synthesize(
    request: Request, engine: Engine, executor: Executor, body: SynthesizeRequest
) -> Response:
    return await _speak(
        request,
        engine,
        executor,
        body.text,
        body.voice,
        body.speed,
        body.sample_rate,
        body.format,
        body.stream,
    )


@router.post("/v1/audio/speech", responses=SPEAK_ERRORS)
async def speech(
    request: Request, engine: Engine, executor: Executor, body: SpeechRequest
) -> Response:
    if body.response_format not in MEDIA_TYPES:
        raise ApiError(
            400,
            "unsupported_format",
            f"response_format {body.response_format!r} is not available; use wav, pcm or flac",
            field="response_format",
        )
    fmt = cast(AudioFormat, body.response_format)
    # OpenAI streams speech as it is made; so does this, a sentence at a time.
    return await _speak(
        request, engine, executor, body.input, body.voice, body.speed, None, fmt, True
    )


def _voices(request: Request, engine: TtsEngine) -> list[dict[str, Any]]:
    require_ready(request.app)
    assert engine.voice is not None
    info = engine.voice.info
    return [
        {
            "name": info.name,
            "language": info.language,
            "sample_rate": info.sample_rate,
            "quality": info.quality,
            "default": True,
        }
    ]


@router.get("/voices", responses=error_responses(503))
async def voices(request: Request, engine: Engine) -> JSONResponse:
    return JSONResponse({"voices": _voices(request, engine)})


@router.get("/models", responses=error_responses(503))
@router.get("/v1/models", responses=error_responses(503))
async def models(request: Request, engine: Engine) -> JSONResponse:
    return model_list(*(model_card(v["name"], "piper") for v in _voices(request, engine)))


def create_app(settings: TtsEngineSettings | None = None) -> FastAPI:
    settings = settings or TtsEngineSettings()
    registry = CollectorRegistry()
    engine = TtsEngine(settings, registry)
    app = build_engine_app(
        title="voice-tts",
        settings=settings,
        registry=registry,
        route_metrics={"/synthesize": engine.requests, "/v1/audio/speech": engine.requests},
        load=engine.load,
        describe=engine.describe,
    )
    app.state.engine = engine
    app.include_router(router)
    return app
