"""The gateway service: POST /v1/turn, WebSocket /v1/stream, GET /v1/routes, POST
/v1/token; plus /health, /ready and /metrics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.datastructures import UploadFile
from starlette.responses import Response

from voice_engines.common.app import from_state
from voice_engines.common.body_limit import BodySizeLimitMiddleware
from voice_engines.common.correlation import CorrelationIdMiddleware
from voice_engines.common.errors import (
    ApiError,
    error_response,
    error_responses,
    install_error_handlers,
)
from voice_engines.common.metrics import RequestMetrics, RouteMetricsMiddleware, metrics_response
from voice_engines.gateway.access import AccessMiddleware, ApiKeys, parse_origins
from voice_engines.gateway.audio import normalize_upload, pcm_seconds, pcm_to_wav
from voice_engines.gateway.keys import Secrets
from voice_engines.gateway.metrics import GatewayMetrics
from voice_engines.gateway.pipeline import Pipeline, TurnListener, Utterance, counted_turn
from voice_engines.gateway.routes import STAGES, Routes, RoutesWatcher
from voice_engines.gateway.sessions import SessionStore, checked_session_id
from voice_engines.gateway.settings import GatewaySettings
from voice_engines.gateway.stages import Stages
from voice_engines.gateway.streaming import serve_stream
from voice_engines.gateway.twilio import serve_twilio

PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
# The turn's options, from the form or the query.
_OPTIONS = ("session_id", "language", "sample_rate")


@dataclass
class Gateway:
    """What the routes share, made once per app."""

    settings: GatewaySettings
    registry: CollectorRegistry
    metrics: GatewayMetrics
    requests: RequestMetrics
    secrets: Secrets
    watcher: RoutesWatcher
    client: httpx.AsyncClient
    pipeline: Pipeline
    keys: ApiKeys

    @classmethod
    def build(cls, settings: GatewaySettings) -> Gateway:
        registry = CollectorRegistry()
        metrics = GatewayMetrics(registry, settings.gateway_agent)
        secrets = Secrets()
        watcher = RoutesWatcher(
            settings.routes_path,
            settings.gateway_routes_poll_seconds,
            metrics.routes_changed,
        )
        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            follow_redirects=False,
        )
        sessions = SessionStore(
            settings.gateway_max_sessions,
            settings.gateway_history_turns,
            settings.gateway_session_ttl,
        )
        stages = Stages(settings, client, secrets, metrics)
        return cls(
            settings=settings,
            registry=registry,
            metrics=metrics,
            requests=RequestMetrics(registry, "gateway_http", "Gateway HTTP"),
            secrets=secrets,
            watcher=watcher,
            client=client,
            pipeline=Pipeline(settings, stages, sessions, metrics),
            keys=ApiKeys(settings.gateway_auth_keys_dir, settings.gateway_token_ttl),
        )

    def current_routes(self) -> Routes:
        routes = self.watcher.current
        if routes is None:
            raise ApiError(
                503,
                "no_routes",
                f"the gateway has no valid routes yet: {self.watcher.error or 'not read yet'}",
                headers={"Retry-After": "1"},
            )
        return routes


GatewayState = Annotated[Gateway, Depends(from_state("gateway"))]
router = APIRouter()


def _sample_rate(value: str | None, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        rate = int(value)
    except ValueError:
        rate = 0
    if not 8000 <= rate <= 48000:
        raise ApiError(
            422, "invalid_request", "sample_rate must be 8000-48000 Hz", field="sample_rate"
        )
    return rate


async def _read_turn_request(request: Request) -> tuple[bytes, dict[str, str | None]]:
    """The audio and the options, from a multipart form (file, session_id, language,
    sample_rate) or from a raw audio body with the options in the query."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=16)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(
                422, "invalid_request", "the form needs a file field with the audio", field="file"
            )
        data = await upload.read()
        options: dict[str, str | None] = {
            k: v for k in _OPTIONS if isinstance(v := form.get(k), str)
        }
        return data, options
    if content_type.startswith("audio/") or content_type == "application/octet-stream":
        return await request.body(), {k: request.query_params.get(k) for k in _OPTIONS}
    raise ApiError(
        415,
        "unsupported_media_type",
        "send multipart/form-data with the audio in a file field, or the audio itself "
        "(Content-Type audio/wav, audio/flac, ...)",
    )


class _CollectedAudio(TurnListener):
    """An HTTP turn answers once: the reply's audio is gathered for the answer."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def audio(self, pcm: bytes) -> None:
        self.chunks.append(pcm)


@router.get("/health")
async def health() -> Response:
    return JSONResponse({"status": "alive"})


@router.get("/ready", responses=error_responses(503))
async def ready(gateway: GatewayState) -> Response:
    try:
        routes = gateway.current_routes()
    except ApiError as exc:
        return error_response(exc)
    # Ready means a turn can be served: a gateway that started before its engines had
    # a route (the operator writes null until one is available) waits for the kubelet
    # to refresh its routes file, so the agent is not Ready while turns would fail.
    generation = gateway.watcher.generation
    unrouted = [stage for stage in STAGES if routes.route(stage) is None]
    if unrouted:
        return error_response(
            ApiError(
                503,
                "stage_unrouted",
                f"no provider serves {', '.join(unrouted)} yet (routes generation {generation})",
                headers={"Retry-After": "1"},
            )
        )
    return JSONResponse({"status": "ready", "generation": generation, "routes": routes.summary()})


@router.get("/metrics")
async def metrics_endpoint(gateway: GatewayState) -> Response:
    return metrics_response(gateway.registry)


@router.get("/v1/routes")
async def routes_endpoint(gateway: GatewayState) -> Response:
    watcher = gateway.watcher
    routes = watcher.current
    return JSONResponse(
        {
            "generation": watcher.generation,
            "error": watcher.error,
            "routes": routes.summary() if routes else None,
        }
    )


@router.post(
    "/v1/turn", responses=error_responses(400, 401, 408, 413, 415, 422, 429, 502, 503, 504)
)
async def turn(request: Request, gateway: GatewayState) -> Response:
    settings = gateway.settings
    # Taken once: a reload while this turn runs does not move it.
    routes = gateway.current_routes()
    with counted_turn(gateway.metrics, "turn"):
        data, options = await _read_turn_request(request)
        session_id = checked_session_id(options.get("session_id"))
        rate = _sample_rate(options.get("sample_rate"), settings.gateway_sample_rate)
        language = options.get("language") or None
        wav, seconds = await asyncio.to_thread(
            normalize_upload, data, settings.gateway_max_audio_seconds
        )
        collected = _CollectedAudio()
        report = await gateway.pipeline.run(
            routes, Utterance(wav, seconds, language, rate, session_id), collected, streaming=False
        )
    pcm = b"".join(collected.chunks)
    audio = await asyncio.to_thread(pcm_to_wav, pcm, rate)
    body: dict[str, Any] = {
        **report.as_json(),
        "audio": {
            "format": "wav",
            "sample_rate": rate,
            "seconds": round(pcm_seconds(len(pcm), rate), 3),
            "base64": base64.b64encode(audio).decode("ascii"),
        },
    }
    return JSONResponse(body)


@router.post("/v1/token", responses=error_responses(400, 401))
async def token(gateway: GatewayState) -> Response:
    """A short-lived token for a browser (the page must not hold an API key): put it in
    the WebSocket's subprotocols as "token.<token>" (with "voiceops"), in ?token=, or send
    it as a bearer token. Only an API key mints one."""
    if not gateway.keys.enabled:
        raise ApiError(
            400,
            "auth_disabled",
            "the gateway takes no keys (spec.gateway.auth is not set): no token is needed",
        )
    return JSONResponse(gateway.keys.mint())


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket, gateway: GatewayState) -> None:
    await serve_stream(websocket, gateway.pipeline, gateway.watcher)


@router.websocket("/v1/twilio")
async def twilio(websocket: WebSocket, gateway: GatewayState) -> None:
    """A phone call: Twilio Media Streams' messages, 8 kHz mu-law both ways."""
    await serve_twilio(websocket, gateway.pipeline, gateway.watcher)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    gateway: Gateway = app.state.gateway
    await asyncio.to_thread(gateway.watcher.check)
    watching = asyncio.create_task(gateway.watcher.run())
    try:
        yield
    finally:
        watching.cancel()
        await gateway.client.aclose()


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    gateway = Gateway.build(settings or GatewaySettings())
    app = FastAPI(title="voice-gateway", lifespan=lifespan)
    app.state.gateway = gateway
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=gateway.settings.gateway_max_body_bytes,
        timeout_s=gateway.settings.gateway_body_timeout,
    )
    app.add_middleware(RouteMetricsMiddleware, routes={"/v1/turn": gateway.requests})
    origins = parse_origins(gateway.settings.gateway_cors_origins)
    app.add_middleware(AccessMiddleware, keys=gateway.keys, origins=origins)
    app.add_middleware(CorrelationIdMiddleware, quiet_paths=PROBE_PATHS)
    if origins:
        # Outermost, so refusals carry the CORS headers too and a page can read them.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            max_age=600,
        )
    app.include_router(router)
    return app
