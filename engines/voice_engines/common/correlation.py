"""Correlation ids: taken from the caller's X-Request-ID (or X-Correlation-ID) when it is
sane, made up otherwise, kept in a context variable for the logs and echoed back."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voice_engines.common.metrics import outcome_status

REQUEST_ID_HEADER = "x-request-id"
_INCOMING_HEADERS = (b"x-request-id", b"x-correlation-id")
# A caller's id lands in our logs and response headers: keep it short and printable.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)
access_log = logging.getLogger("voice_engines.access")
log = logging.getLogger(__name__)


def current_correlation_id() -> str | None:
    return _correlation_id.get()


def pick_correlation_id(headers: list[tuple[bytes, bytes]]) -> str:
    found = dict(headers)
    for name in _INCOMING_HEADERS:
        value = found.get(name, b"").decode("latin-1").strip()
        if _SANE_ID.match(value):
            return value
    return uuid.uuid4().hex


class CorrelationIdMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched."""

    def __init__(self, app: ASGIApp, quiet_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        # Probes and scrapes every few seconds would drown the access log.
        self.quiet_paths = quiet_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = pick_correlation_id(scope.get("headers", []))
        token = _correlation_id.set(cid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((REQUEST_ID_HEADER.encode(), cid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        started_response = False

        async def send_tracked(message: Message) -> None:
            nonlocal started_response
            started_response = started_response or message["type"] == "http.response.start"
            await send_with_id(message)

        raised = False
        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            # Answered here rather than by Starlette's outermost error middleware, which
            # runs after the correlation id is gone and would drop it from the reply.
            log.exception("unhandled error")
            if started_response:
                raised = True
                raise
            status = 500
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": json.dumps(
                        {
                            "error": {
                                "code": "internal_error",
                                "message": "internal error",
                                "field": None,
                                "correlation_id": cid,
                            }
                        }
                    ).encode(),
                }
            )
        finally:
            # A stream that broke after its 200 is logged as the failure the metrics count.
            status = outcome_status(scope, status, raised)
            if scope["path"] not in self.quiet_paths or status >= 400:
                access_log.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            _correlation_id.reset(token)
