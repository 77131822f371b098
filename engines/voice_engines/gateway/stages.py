"""Runs one stage on the route a turn started with: the primary provider, then the
fallback if the primary fails before producing anything, each behind its own circuit
breaker, every call measured and every failure counted."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import httpx

from voice_engines.common.correlation import current_correlation_id
from voice_engines.common.errors import ApiError
from voice_engines.gateway import adapters
from voice_engines.gateway.adapters.base import (
    CallContext,
    ChatParams,
    LlmDelta,
    Message,
    ProviderError,
    Transcript,
)
from voice_engines.gateway.breaker import CircuitBreaker
from voice_engines.gateway.keys import Secrets
from voice_engines.gateway.metrics import GatewayMetrics
from voice_engines.gateway.routes import Routes, Stage, StageRoute, llm_settings, stt_settings
from voice_engines.gateway.settings import GatewaySettings

T = TypeVar("T")

# kind -> (HTTP status, error code) of the gateway's answer.
_ANSWERS: dict[str, tuple[int, str]] = {
    "rejected": (502, "upstream_rejected"),
    "auth": (502, "upstream_auth_failed"),
    "rate_limited": (503, "upstream_rate_limited"),
    "unavailable": (503, "upstream_unavailable"),
    "timeout": (504, "upstream_timeout"),
    "bad_response": (502, "upstream_bad_response"),
    "missing_key": (503, "api_key_missing"),
    "circuit_open": (503, "circuit_open"),
}


def error_code(err: ProviderError) -> str:
    return _ANSWERS[err.kind][1]


def to_api_error(stage: str, failures: list[tuple[StageRoute, ProviderError]]) -> ApiError:
    """The answer for a stage whose providers all failed: the last failure decides the
    status; the message tells what each provider said."""
    last = failures[-1][1]
    status, code = _ANSWERS[last.kind]
    if last.kind == "rejected" and last.status and 400 <= last.status < 500:
        # Our engines refuse what the client asked for (e.g. a language the model lacks):
        # that is the client's to fix.
        status = last.status
    message = "; then ".join(f"{stage} via {r.name}: {e.message}" for r, e in failures)
    headers = {}
    if last.retry_after is not None and last.kind in (
        "rate_limited",
        "unavailable",
        "circuit_open",
    ):
        headers["Retry-After"] = str(max(1, math.ceil(last.retry_after)))
    return ApiError(status, code, message, headers=headers)


class Stages:
    def __init__(
        self,
        settings: GatewaySettings,
        client: httpx.AsyncClient,
        secrets: Secrets,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.client = client
        self.secrets = secrets
        self.metrics = metrics
        self._breakers: dict[tuple[str, ...], CircuitBreaker] = {}
        self._timeouts = {
            "stt": settings.gateway_stt_timeout,
            "llm": settings.gateway_llm_timeout,
            "tts": settings.gateway_tts_timeout,
        }

    def context(self, stage: Stage) -> CallContext:
        return CallContext(
            client=self.client,
            secrets=self.secrets,
            timeout=self._timeouts[stage],
            connect_timeout=self.settings.gateway_connect_timeout,
            retries=self.settings.gateway_retries,
            retry_max_wait=self.settings.gateway_retry_max_wait,
            # Read when the stage starts, inside the request's (or stream's) context.
            request_id=current_correlation_id(),
        )

    def breaker(self, stage: Stage, route: StageRoute) -> CircuitBreaker:
        # A new revision is a new configuration: it starts with a closed circuit.
        key = (stage, route.name, route.url or "", route.model or "", route.revision)
        if key not in self._breakers:
            self._breakers[key] = CircuitBreaker(
                self.settings.gateway_breaker_failures, self.settings.gateway_breaker_reset_seconds
            )
        return self._breakers[key]

    async def transcribe(
        self, routes: Routes, wav: bytes, language: str | None
    ) -> tuple[StageRoute, Transcript]:
        async def one(route: StageRoute) -> AsyncIterator[Transcript]:
            stt = adapters.speech_to_text(self.context("stt"), route)
            # The client's language, else the route's.
            yield await stt.transcribe(wav, language or stt_settings(route).language)

        route, results = await self._open("stt", routes, one)
        found = [transcript async for transcript in results]
        return route, found[0] if found else Transcript("")

    async def chat(
        self, routes: Routes, history: list[Message], user_text: str
    ) -> tuple[StageRoute, AsyncIterator[LlmDelta]]:
        def one(route: StageRoute) -> AsyncIterator[LlmDelta]:
            settings = llm_settings(route)
            system = settings.system_prompt or self.settings.gateway_system_prompt
            messages = [
                {"role": "system", "content": system},
                *history,
                {"role": "user", "content": user_text},
            ]
            params = ChatParams(settings.max_tokens, settings.temperature)
            return adapters.chat_model(self.context("llm"), route).stream(messages, params)

        return await self._open("llm", routes, one)

    async def speak(
        self, routes: Routes, text: str, sample_rate: int
    ) -> tuple[StageRoute, AsyncIterator[bytes]]:
        def one(route: StageRoute) -> AsyncIterator[bytes]:
            return adapters.text_to_speech(self.context("tts"), route).stream(text, sample_rate)

        return await self._open("tts", routes, one)

    async def _open(
        self,
        stage: Stage,
        routes: Routes,
        start: Callable[[StageRoute], AsyncIterator[T]],
    ) -> tuple[StageRoute, AsyncIterator[T]]:
        """The first provider that yields a first item, and its stream (first item
        included). Later failures are the stream's: a reply half spoken by one provider
        is not restarted on another."""
        primary = routes.route(stage)
        if primary is None:
            raise ApiError(
                503,
                "stage_unavailable",
                f"no provider serves the {stage} stage yet (its route is null)",
            )
        failures: list[tuple[StageRoute, ProviderError]] = []
        for route in primary.candidates():
            breaker = self.breaker(stage, route)
            if not breaker.allow():
                error = ProviderError(
                    "circuit_open",
                    f"circuit open after repeated failures; next try in "
                    f"{breaker.retry_after():.0f} s",
                    retry_after=breaker.retry_after(),
                )
                self._count_error(stage, route, error)
                failures.append((route, error))
                continue
            started = time.perf_counter()
            stream: AsyncIterator[T] | None = None
            try:
                stream = start(route)
                first = await anext(stream)
            except StopAsyncIteration:
                first = None
            except ProviderError as error:
                self._settle(breaker, error)
                self._count_error(stage, route, error)
                failures.append((route, error))
                if not error.falls_back:
                    break
                continue
            except BaseException:
                breaker.release()
                raise
            if route is not primary:
                self.metrics.fallbacks.labels(
                    self.metrics.agent, stage, primary.name, route.name
                ).inc()
            return route, self._measured(stage, route, breaker, started, first, stream)
        raise to_api_error(stage, failures)

    async def _measured(
        self,
        stage: Stage,
        route: StageRoute,
        breaker: CircuitBreaker,
        started: float,
        first: T | None,
        stream: AsyncIterator[T] | None,
    ) -> AsyncIterator[T]:
        completed = False
        try:
            if first is not None:
                yield first
                assert stream is not None
                async for item in stream:
                    yield item
            completed = True
        except ProviderError as error:
            self._settle(breaker, error)
            self._count_error(stage, route, error)
            raise to_api_error(stage, [(route, error)]) from None
        finally:
            if stream is not None and hasattr(stream, "aclose"):
                await stream.aclose()
            if completed:
                breaker.success()
                labels = self.metrics.stage_labels(stage, route)
                self.metrics.breaker_open.labels(*labels).set(0)
                self.metrics.stage_duration.labels(*labels).observe(time.perf_counter() - started)
            else:
                # The consumer stopped early (client gone) or failed itself: no verdict
                # on the provider.
                breaker.release()

    def _settle(self, breaker: CircuitBreaker, error: ProviderError) -> None:
        if error.trips_breaker:
            breaker.failure()
        else:
            breaker.release()

    def _count_error(self, stage: Stage, route: StageRoute, error: ProviderError) -> None:
        self.metrics.stage_errors.labels(
            *self.metrics.stage_labels(stage, route), error_code(error)
        ).inc()
        self.metrics.breaker_open.labels(*self.metrics.stage_labels(stage, route)).set(
            1 if self.breaker(stage, route).state == "open" else 0
        )
