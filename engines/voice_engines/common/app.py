"""Wires an engine's FastAPI app: middleware, the error shape, /health, /ready and
/metrics, the bounded executor, and the model lifecycle (loaded once, on a thread, when
the app starts; /ready turns true only after the warm-up inference)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection
from starlette.responses import Response

from voice_engines.common.body_limit import BodySizeLimitMiddleware
from voice_engines.common.correlation import CorrelationIdMiddleware
from voice_engines.common.errors import (
    ApiError,
    error_response,
    error_responses,
    install_error_handlers,
)
from voice_engines.common.executor import BoundedExecutor
from voice_engines.common.metrics import (
    RequestMetrics,
    RouteMetricsMiddleware,
    metrics_response,
    work_gauges,
)
from voice_engines.common.settings import EngineSettings

log = logging.getLogger(__name__)

PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})


class ModelLifecycle:
    """loading -> ready, or loading -> failed (then /health fails too, so the kubelet
    restarts the pod and the crash loop shows instead of a pod that never gets ready)."""

    def __init__(self) -> None:
        self.status = "loading"
        self.error: str | None = None
        self.load_seconds: float | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def require_ready(self, retry_after_s: int) -> None:
        if self.status == "failed":
            raise ApiError(503, "model_failed", f"the model failed to load: {self.error}")
        if self.status != "ready":
            raise ApiError(
                503,
                "not_ready",
                "the model is still loading",
                headers={"Retry-After": str(retry_after_s)},
            )


def build_engine_app(
    *,
    title: str,
    settings: EngineSettings,
    registry: CollectorRegistry,
    route_metrics: Mapping[str, RequestMetrics],
    load: Callable[[], Any],
    describe: Callable[[], dict[str, Any]],
    unload: Callable[[], None] | None = None,
    single_stream: bool = False,
) -> FastAPI:
    """load runs on an inference worker at startup and must leave the model warmed up;
    describe says what is loaded, for /ready. single_stream: the backend decodes one
    request at a time (its calls serialize on a lock), so one worker thread serves it
    whatever ENGINE_MAX_CONCURRENCY says, and every call comes from that same thread."""
    lifecycle = ModelLifecycle()
    executor = BoundedExecutor(
        title,
        1 if single_stream else settings.engine_max_concurrency,
        settings.engine_max_queue,
        settings.engine_queue_timeout,
        settings.engine_retry_after,
    )
    work_gauges(
        registry,
        title.removeprefix("voice-"),
        lambda: executor.in_flight,
        lambda: executor.queue_depth,
    )

    async def load_model() -> None:
        started = time.perf_counter()
        try:
            await executor.run_unqueued(load)
        except Exception as exc:
            lifecycle.status, lifecycle.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load", extra={"engine": title})
            return
        lifecycle.load_seconds = round(time.perf_counter() - started, 3)
        lifecycle.status = "ready"
        log.info("model loaded and warmed up", extra={"engine": title, **describe()})

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(load_model())
        try:
            yield
        finally:
            loading.cancel()
            executor.shutdown()
            if unload is not None and lifecycle.ready:
                unload()

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.settings = settings
    app.state.executor = executor
    app.state.lifecycle = lifecycle
    install_error_handlers(app)
    # The last added runs first: correlation ids wrap everything (so even a 413 from the
    # body limit carries one), and metrics see the body limit's refusals.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.engine_max_body_bytes,
        timeout_s=settings.engine_body_timeout,
    )
    app.add_middleware(RouteMetricsMiddleware, routes=route_metrics)
    app.add_middleware(CorrelationIdMiddleware, quiet_paths=PROBE_PATHS)

    @app.get("/health", responses=error_responses(503))
    async def health() -> Response:
        if lifecycle.status == "failed":
            return error_response(
                ApiError(503, "model_failed", f"the model failed to load: {lifecycle.error}")
            )
        return JSONResponse({"status": "alive"})

    @app.get("/ready", responses=error_responses(503))
    async def ready() -> Response:
        try:
            lifecycle.require_ready(settings.engine_retry_after)
        except ApiError as exc:
            return error_response(exc)
        return JSONResponse(
            {"status": "ready", "load_seconds": lifecycle.load_seconds, **describe()}
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return metrics_response(registry)

    return app


def model_list(*cards: dict[str, Any]) -> JSONResponse:
    """GET /v1/models as OpenAI answers it: a list of model objects."""
    return JSONResponse({"object": "list", "data": list(cards)})


def model_card(name: str, owned_by: str, **extra: Any) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owned_by, **extra}


def require_ready(app: FastAPI) -> None:
    lifecycle: ModelLifecycle = app.state.lifecycle
    lifecycle.require_ready(app.state.settings.engine_retry_after)


def from_state(name: str) -> Callable[[HTTPConnection], Any]:
    """A dependency that hands a route what create_app put on app.state under name; the
    route's Annotated type says what that is."""

    def get(connection: HTTPConnection) -> Any:
        return getattr(connection.app.state, name)

    return get


Executor = Annotated[BoundedExecutor, Depends(from_state("executor"))]
