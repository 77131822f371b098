"""HTTP plumbing every adapter shares: failures classified from status codes and
transport errors, retries (tenacity, honouring Retry-After), the stage deadline, and
streamed bodies that close their connection whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from voice_engines.gateway.adapters.base import CallContext, ProviderError
from voice_engines.gateway.audio import PcmResampler
from voice_engines.gateway.keys import MissingKeyError

_MAX_ERROR_BODY = 16 * 1024
_backoff = wait_random_exponential(multiplier=0.1, max=1.0)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_text(body: bytes) -> str:
    """The human part of an error body, whichever vendor's shape it has: ours and
    OpenAI's {"error": {"message"}}, Deepgram's {"err_msg"}, ElevenLabs' {"detail":
    {"message"}} or {"detail": [...]}."""
    try:
        document: Any = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:300] or "(empty body)"
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if document.get("err_msg"):
            return str(document["err_msg"])
        detail = document.get("detail")
        if isinstance(detail, dict) and detail.get("message"):
            return str(detail["message"])
        if detail:
            return json.dumps(detail)[:300]
        if document.get("message"):
            return str(document["message"])
    return json.dumps(document)[:300]


def status_error(
    ctx: CallContext, provider: str, response: httpx.Response, body: bytes
) -> ProviderError:
    status = response.status_code
    message = f"{provider} answered {status}: {ctx.secrets.scrub(error_text(body))[:300]}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status in (401, 403):
        return ProviderError("auth", message, status=status)
    if status == 429:
        return ProviderError("rate_limited", message, status=status, retry_after=retry_after)
    if status >= 500 or status == 408:
        return ProviderError("unavailable", message, status=status, retry_after=retry_after)
    return ProviderError("rejected", message, status=status)


def transport_error(provider: str, exc: httpx.HTTPError) -> ProviderError:
    if isinstance(exc, httpx.ConnectTimeout):
        return ProviderError("timeout", f"{provider}: connecting timed out", sent=False)
    if isinstance(exc, httpx.ConnectError):
        return ProviderError("unavailable", f"{provider}: cannot connect ({exc})", sent=False)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError("timeout", f"{provider}: no answer in time ({type(exc).__name__})")
    return ProviderError("unavailable", f"{provider}: {type(exc).__name__}: {exc}")


def api_key(ctx: CallContext, key_file: str | None, key_env: str | None) -> str:
    try:
        return ctx.secrets.read(key_file, key_env)
    except MissingKeyError as exc:
        raise ProviderError("missing_key", str(exc)) from None


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, ProviderError) and exc.retry_after is not None:
        return exc.retry_after
    return _backoff(state)


async def _open(
    ctx: CallContext,
    provider: str,
    build: Callable[[], httpx.Request],
    idempotent: bool,
) -> httpx.Response:
    retrying = AsyncRetrying(
        stop=stop_after_attempt(ctx.retries + 1),
        wait=_wait,
        retry=retry_if_exception(
            lambda e: isinstance(e, ProviderError) and e.retryable(idempotent, ctx.retry_max_wait)
        ),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            try:
                response = await ctx.client.send(build(), stream=True)
            except httpx.HTTPError as exc:
                raise transport_error(provider, exc) from None
            if response.status_code >= 400:
                try:
                    body = await _read_some(response, _MAX_ERROR_BODY)
                finally:
                    await response.aclose()
                raise status_error(ctx, provider, response, body)
            return response
    raise AssertionError("unreachable: tenacity reraises the last failure")


async def _read_some(response: httpx.Response, limit: int) -> bytes:
    data = b""
    try:
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) >= limit:
                break
    except httpx.HTTPError:
        pass
    return data[:limit]


async def open_stream(
    ctx: CallContext,
    provider: str,
    build: Callable[[], httpx.Request],
    *,
    idempotent: bool,
) -> httpx.Response:
    """A 2xx response whose body is still to be read (iter_bytes / iter_lines close it).
    Retries happen only here, before any of the body reached the caller."""
    try:
        async with asyncio.timeout(ctx.timeout):
            return await _open(ctx, provider, build, idempotent)
    except TimeoutError:
        raise ProviderError("timeout", f"{provider}: no answer within {ctx.timeout:g} s") from None


async def request_json(
    ctx: CallContext,
    provider: str,
    build: Callable[[], httpx.Request],
    *,
    idempotent: bool,
) -> Any:
    """A whole call, retries included, within the stage timeout; the JSON it answered."""
    try:
        async with asyncio.timeout(ctx.timeout):
            response = await _open(ctx, provider, build, idempotent)
            try:
                body = await response.aread()
            except httpx.HTTPError as exc:
                raise transport_error(provider, exc) from None
            finally:
                await response.aclose()
    except TimeoutError:
        raise ProviderError("timeout", f"{provider}: no answer within {ctx.timeout:g} s") from None
    try:
        return json.loads(body)
    except ValueError:
        raise ProviderError("bad_response", f"{provider} answered with invalid JSON") from None


async def iter_bytes(provider: str, response: httpx.Response) -> AsyncGenerator[bytes, None]:
    try:
        async for chunk in response.aiter_bytes():
            if chunk:
                yield chunk
    except httpx.HTTPError as exc:
        raise transport_error(provider, exc) from None
    finally:
        await response.aclose()


async def iter_pcm(
    provider: str, response: httpx.Response, native_rate: int, rate: int
) -> AsyncGenerator[bytes, None]:
    """A PCM body at native_rate, as whole 16-bit samples at rate."""
    resampler = PcmResampler(native_rate, rate)
    async with contextlib.aclosing(iter_bytes(provider, response)) as chunks:
        async for chunk in chunks:
            if pcm := resampler.feed(chunk):
                yield pcm
    if tail := resampler.flush():
        yield tail


async def iter_lines(provider: str, response: httpx.Response) -> AsyncGenerator[str, None]:
    try:
        async for line in response.aiter_lines():
            yield line
    except httpx.HTTPError as exc:
        raise transport_error(provider, exc) from None
    finally:
        await response.aclose()
