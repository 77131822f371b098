"""Prometheus metrics: one registry per app (several apps may share a process, e.g. in
tests), request counters and latency measured by middleware per route, so a streamed
response is timed until its last byte and requests rejected before the handler (bad JSON,
oversized bodies) still count as errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The *_created series double every family's size and no dashboard reads them.
disable_created_metrics()

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Where a streamed response that failed after its 200 went out records the status it would
# have had, for the metrics and the access log (the client saw it as an error event or a
# cut-off body).
_FAILED_STATUS = "voice_engines.failed_status"


def mark_failed(scope: Scope, status: int) -> None:
    scope[_FAILED_STATUS] = status


def outcome_status(scope: Scope, sent: int, raised: bool) -> int:
    """The status a request counts as: the one sent, unless its stream broke after
    starting (an exception: 500) or ended in an error event (the error's status)."""
    if raised and sent < 400:
        return 500
    failed = scope.get(_FAILED_STATUS)
    return failed if isinstance(failed, int) and sent < 400 else sent


class RequestMetrics:
    """requests_total, errors_total and duration_seconds of one kind of work, e.g.
    prefix "stt_transcription" gives stt_transcription_requests_total and so on."""

    def __init__(self, registry: CollectorRegistry, prefix: str, what: str) -> None:
        self.requests = Counter(
            f"{prefix}_requests_total",
            f"{what} requests received",
            ["endpoint"],
            registry=registry,
        )
        self.errors = Counter(
            f"{prefix}_errors_total",
            f"{what} requests that failed",
            ["endpoint", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{prefix}_duration_seconds",
            f"{what} request duration, to the last byte sent",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class RouteMetricsMiddleware:
    def __init__(self, app: ASGIApp, routes: Mapping[str, RequestMetrics]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if metrics is None:
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"]
        metrics.requests.labels(endpoint).inc()
        started = time.perf_counter()
        sent = 500
        raised = False

        async def observing_send(message: Message) -> None:
            nonlocal sent
            if message["type"] == "http.response.start":
                sent = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        except BaseException:
            # Raised after the response started (e.g. mid-stream): the client saw a 200
            # that broke off, which is a failure all the same.
            raised = True
            raise
        finally:
            status = outcome_status(scope, sent, raised)
            if status >= 400:
                metrics.errors.labels(endpoint, str(status)).inc()
            metrics.duration.labels(endpoint).observe(time.perf_counter() - started)


def histogram(
    registry: CollectorRegistry, name: str, doc: str, buckets: Sequence[float]
) -> Histogram:
    return Histogram(name, doc, buckets=buckets, registry=registry)


def work_gauges(
    registry: CollectorRegistry,
    engine: str,
    in_flight: Callable[[], float],
    queue_depth: Callable[[], float],
) -> None:
    """The executor's load, read at each scrape: the signal an HPA or KEDA scales an
    engine on (a Pods metric through the user's custom-metrics adapter)."""
    Gauge(
        "voice_engine_requests_in_flight",
        "Inference requests admitted and not finished: holding a worker or queued for one",
        ["engine"],
        registry=registry,
    ).labels(engine).set_function(in_flight)
    Gauge(
        "voice_engine_queue_depth",
        "Inference requests admitted and still waiting for a worker",
        ["engine"],
        registry=registry,
    ).labels(engine).set_function(queue_depth)


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
