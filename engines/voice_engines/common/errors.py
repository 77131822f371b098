"""The one JSON error shape every engine answers with, and the handlers that produce it.

{"error": {"code": "...", "message": "...", "field": "..." | null,
           "correlation_id": "..."}}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from voice_engines.common.correlation import current_correlation_id

log = logging.getLogger(__name__)

_STATUS_CODES = {
    # The one 400 raised as an HTTPException: FastAPI could not read the body at all (not
    # UTF-8, JSON nested too deep, multipart without its boundary).
    400: "malformed_body",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    431: "headers_too_large",
    429: "overloaded",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None
    correlation_id: str | None


class ErrorBody(BaseModel):
    """The one error shape, as the OpenAPI schema shows it."""

    error: ErrorDetail


_MEANINGS = {
    400: "The request is wrong (empty, malformed JSON, bad text or audio, unknown voice, ...)",
    401: "No valid API key or token (Authorization: Bearer ...)",
    408: "The request body did not arrive in time",
    413: "The body, the audio, the text or the prompt is too large",
    415: "Not a media type or audio this endpoint decodes",
    422: "A field is missing, out of range or of the wrong type",
    429: "Overloaded: the queue is full or would wait too long (Retry-After)",
    502: "A backend or provider answered wrongly",
    503: "Not ready, the model failed, or the queue wait timed out (Retry-After)",
    504: "A provider did not answer in time",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` documenting these error answers in the one error shape."""
    return {
        status: {"model": ErrorBody, "description": _MEANINGS[status]}
        for status in sorted(statuses)
    }


class ApiError(Exception):
    """A failure the client should see as-is: status, a stable code and a readable message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class OverloadedError(ApiError):
    """No room to take the request now; Retry-After tells the client when to come back."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(status, code, message, headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "field": field,
            "correlation_id": current_correlation_id(),
        }
    }


def error_bytes(code: str, message: str, field: str | None = None) -> bytes:
    """The error body serialized, for raw ASGI middleware that has no Response class."""
    return json.dumps(error_body(code, message, field)).encode()


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, error.field),
        status_code=error.status,
        headers=error.headers,
    )


def field_path(loc: Sequence[Any]) -> str | None:
    """Turns a pydantic error location into a dotted field name, dropping where it came from
    ("body", "query", ...) since the client only knows the field."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {"type": "invalid", "msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        context = first.get("ctx")
        detail = context.get("error", "") if isinstance(context, dict) else ""
        return ApiError(400, "malformed_json", f"request body is not valid JSON: {detail}".strip())
    field = field_path(first.get("loc", ()))
    message = str(first.get("msg", "invalid request"))
    if field:
        message = f"{field}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return ApiError(422, "invalid_request", message, field=field)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        if exc.status >= 500:
            log.warning("request failed: %s: %s", exc.code, exc.message)
        return error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, str(exc.detail), headers=exc.headers))

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(ApiError(500, "internal_error", "internal error"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
