"""What every provider adapter speaks: the three stage interfaces, the failures a
provider call can end in, and the context a call runs in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx

from voice_engines.gateway.keys import Secrets

Message = dict[str, str]

# rejected: the provider refused this request (4xx other than auth and rate limits);
# another provider would refuse it too, so there is no fallback.
Kind = Literal[
    "rejected",
    "auth",
    "rate_limited",
    "unavailable",
    "timeout",
    "bad_response",
    "missing_key",
    "circuit_open",
]


class ProviderError(Exception):
    def __init__(
        self,
        kind: Kind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        # False when the request never reached the provider (connection refused): then
        # even a call that must not run twice can be repeated.
        self.sent = sent

    @property
    def falls_back(self) -> bool:
        return self.kind != "rejected"

    @property
    def trips_breaker(self) -> bool:
        return self.kind in ("auth", "rate_limited", "unavailable", "timeout", "bad_response")

    def retryable(self, idempotent: bool, max_wait: float) -> bool:
        if self.kind == "rate_limited":
            # Refused before any work was done: safe to repeat, if the wait is short.
            return self.retry_after is None or self.retry_after <= max_wait
        if self.kind in ("unavailable", "timeout"):
            return idempotent or not self.sent
        return False


@dataclass(frozen=True)
class CallContext:
    client: httpx.AsyncClient
    secrets: Secrets
    # The whole call, retries included; for a stream, the wait for each piece of it.
    timeout: float
    connect_timeout: float
    retries: int
    retry_max_wait: float
    # The correlation id of the turn this call belongs to (the gateway request's, or the
    # stream's), forwarded to our own engines so one turn's id shows in every log.
    request_id: str | None = None

    def http_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=min(self.connect_timeout, self.timeout))


@dataclass(frozen=True)
class Transcript:
    text: str


@dataclass(frozen=True)
class ChatParams:
    max_tokens: int | None
    temperature: float | None


@dataclass(frozen=True)
class LlmDelta:
    """A piece of a streamed reply. Usage arrives with the last piece when the provider
    reports it (input_tokens None: it did not)."""

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None


class SpeechToText(Protocol):
    async def transcribe(self, wav: bytes, language: str | None) -> Transcript: ...


class ChatModel(Protocol):
    def stream(self, messages: list[Message], params: ChatParams) -> AsyncIterator[LlmDelta]: ...


class TextToSpeech(Protocol):
    def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """16-bit little-endian mono PCM at sample_rate, in pieces as they arrive."""
        ...
