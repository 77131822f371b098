"""The STT service: POST /transcribe, POST /v1/audio/transcriptions (OpenAI-compatible),
GET /models; plus /health, /ready and /metrics from common."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry

from voice_engines.common.app import (
    Executor,
    build_engine_app,
    from_state,
    model_card,
    model_list,
    require_ready,
)
from voice_engines.common.audio import decode_audio, to_mono_at
from voice_engines.common.errors import ApiError, error_responses
from voice_engines.common.metrics import RequestMetrics, histogram
from voice_engines.common.text import check_text, shortened
from voice_engines.stt.backends import SpeechToText, Transcript, load_backend
from voice_engines.stt.backends.base import SAMPLE_RATE
from voice_engines.stt.settings import SttEngineSettings

TemperatureForm = Annotated[float | None, Form(ge=0.0, le=1.0)]
AUDIO_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# One second of faint noise: enough to run the encoder and decoder once.
_WARM_UP_AUDIO = (np.random.default_rng(0).standard_normal(SAMPLE_RATE) * 1e-3).astype(np.float32)


class SttEngine:
    """The loaded backend and what a request needs around it."""

    def __init__(self, settings: SttEngineSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.backend: SpeechToText | None = None
        self.requests = RequestMetrics(registry, "stt_transcription", "Transcription")
        self.audio_seconds = histogram(
            registry, "stt_audio_duration_seconds", "Duration of transcribed audio", AUDIO_BUCKETS
        )

    def load(self) -> None:
        backend = load_backend(self.settings)
        backend.transcribe(_WARM_UP_AUDIO, self.language(None), 0.0, None)
        self.backend = backend

    def describe(self) -> dict[str, Any]:
        return {"backend": self.settings.stt_backend, "model": self.settings.model_name}

    def language(self, requested: str | None) -> str | None:
        """None means detect. English-only models get "en" whatever was configured."""
        check_text(requested, "language")
        language = (requested or self.settings.stt_language).strip().lower()
        multilingual = self.backend.multilingual if self.backend else True
        if language == "auto":
            return None if multilingual else "en"
        if not multilingual and language != "en":
            raise ApiError(
                400,
                "unsupported_language",
                f"model {self.settings.model_name} is English-only; language "
                f"{shortened(language)} is not available",
                field="language",
            )
        return language

    def transcribe_upload(
        self, data: bytes, language: str | None, temperature: float, prompt: str | None
    ) -> Transcript:
        """Runs on a worker thread: decoding and resampling are CPU work too."""
        assert self.backend is not None
        samples, rate = decode_audio(data, "file", self.settings.stt_max_audio_seconds)
        audio = to_mono_at(samples, rate, SAMPLE_RATE)
        return self.backend.transcribe(audio, language, temperature, prompt)


Engine = Annotated[SttEngine, Depends(from_state("engine"))]
router = APIRouter()
TRANSCRIBE_ERRORS = error_responses(400, 408, 413, 415, 422, 429, 503)


async def _transcribe(
    request: Request,
    engine: SttEngine,
    executor: Executor,
    file: UploadFile,
    language: str | None,
    temperature: float | None,
    prompt: str | None,
) -> tuple[Transcript, float]:
    require_ready(request.app)
    check_text(prompt, "prompt")
    data = await file.read()
    if not data:
        raise ApiError(400, "empty_upload", "the uploaded file is empty", field="file")
    started = time.perf_counter()
    result = await executor.run(
        engine.transcribe_upload,
        data,
        engine.language(language),
        engine.settings.stt_temperature if temperature is None else temperature,
        prompt,
    )
    engine.audio_seconds.observe(result.duration)
    return result, time.perf_counter() - started


@router.post("/transcribe", responses=TRANSCRIBE_ERRORS)
async def transcribe_native(
    request: Request,
    engine: Engine,
    executor: Executor,
    file: Annotated[UploadFile, File(description="audio: WAV (any rate/channels), FLAC, ...")],
    language: Annotated[str | None, Form()] = None,
    temperature: TemperatureForm = None,
    prompt: Annotated[str | None, Form(max_length=2000)] = None,
) -> JSONResponse:
    result, seconds = await _transcribe(
        request, engine, executor, file, language, temperature, prompt
    )
    return JSONResponse(
        {
            "text": result.text,
            "language": result.language,
            "duration": round(result.duration, 3),
            "processing_seconds": round(seconds, 3),
            "model": engine.settings.model_name,
            "backend": engine.settings.stt_backend,
            "segments": [
                {"id": i, "start": s.start, "end": s.end, "text": s.text}
                for i, s in enumerate(result.segments)
            ],
        }
    )


@router.post("/v1/audio/transcriptions", responses=TRANSCRIBE_ERRORS)
async def transcribe_openai(
    request: Request,
    engine: Engine,
    executor: Executor,
    file: Annotated[UploadFile, File()],
    # OpenAI clients name a model (e.g. "whisper-1"); this engine serves the one it
    # loaded whatever the name, as a drop-in replacement must.
    model: Annotated[str | None, Form()] = None,  # noqa: ARG001
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form(max_length=2000)] = None,
    response_format: Annotated[Literal["json", "text", "verbose_json"], Form()] = "json",
    temperature: TemperatureForm = None,
) -> Response:
    if (await request.form()).get("response_format") == "":
        # FastAPI reads an empty form field as absent; an empty format is a client's
        # mistake, not a request for the default.
        raise ApiError(
            400,
            "unsupported_format",
            "response_format is empty; use json, text or verbose_json",
            field="response_format",
        )
    result, _ = await _transcribe(request, engine, executor, file, language, temperature, prompt)
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format == "json":
        return JSONResponse({"text": result.text})
    return JSONResponse(
        {
            "task": "transcribe",
            "language": result.language,
            "duration": round(result.duration, 3),
            "text": result.text,
            "segments": [
                {
                    "id": i,
                    "seek": 0,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": [],
                    "temperature": temperature or engine.settings.stt_temperature,
                    "avg_logprob": s.avg_logprob,
                    "compression_ratio": 0.0,
                    "no_speech_prob": s.no_speech_prob,
                }
                for i, s in enumerate(result.segments)
            ],
        }
    )


@router.get("/models")
@router.get("/v1/models")
async def models(engine: Engine) -> JSONResponse:
    settings = engine.settings
    return model_list(
        model_card(settings.model_name, "voice-operator", backend=settings.stt_backend)
    )


def create_app(settings: SttEngineSettings | None = None) -> FastAPI:
    settings = settings or SttEngineSettings()
    registry = CollectorRegistry()
    engine = SttEngine(settings, registry)
    app = build_engine_app(
        title="voice-stt",
        settings=settings,
        registry=registry,
        route_metrics={"/transcribe": engine.requests, "/v1/audio/transcriptions": engine.requests},
        load=engine.load,
        describe=engine.describe,
        single_stream=settings.stt_backend == "whispercpp",
    )
    app.state.engine = engine
    app.include_router(router)
    return app
