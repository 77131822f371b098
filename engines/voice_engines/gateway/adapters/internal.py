"""Our own engines (voice-stt, voice-llm, voice-tts) at the URL of their Service: the
native /transcribe and /synthesize endpoints (which take the engine settings the routes
carry) and the LLM's OpenAI-compatible chat completions (through openai_compat).

Every call carries the turn's correlation id in X-Request-ID, the header the engines take
their own correlation id from, so one turn's id shows in the gateway's and every engine's
logs. Vendors get no such header, and our engines never get a key."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from voice_engines.common.correlation import REQUEST_ID_HEADER
from voice_engines.gateway.adapters.base import CallContext, ProviderError, Transcript
from voice_engines.gateway.adapters.http import iter_pcm, open_stream, request_json


def engine_headers(ctx: CallContext) -> dict[str, str]:
    """The headers of a call to one of our engines: the turn's correlation id."""
    return {REQUEST_ID_HEADER: ctx.request_id} if ctx.request_id else {}


class InternalSpeechToText:
    def __init__(self, ctx: CallContext, url: str, temperature: float | None) -> None:
        self.ctx, self.url, self.temperature = ctx, url.rstrip("/"), temperature

    async def transcribe(self, wav: bytes, language: str | None) -> Transcript:
        form = {}
        if language:
            form["language"] = language
        if self.temperature is not None:
            form["temperature"] = str(self.temperature)

        def build() -> httpx.Request:
            return self.ctx.client.build_request(
                "POST",
                f"{self.url}/transcribe",
                data=form,
                files={"file": ("audio.wav", wav, "audio/wav")},
                headers=engine_headers(self.ctx),
                timeout=self.ctx.http_timeout(),
            )

        document = await request_json(self.ctx, "internal", build, idempotent=True)
        text = document.get("text") if isinstance(document, dict) else None
        if not isinstance(text, str):
            raise ProviderError("bad_response", "the STT engine answered without a text field")
        return Transcript(text.strip())


class InternalTextToSpeech:
    def __init__(self, ctx: CallContext, url: str, speed: float | None) -> None:
        self.ctx, self.url, self.speed = ctx, url.rstrip("/"), speed

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        # The engine resamples as it synthesizes, so its PCM is already at our rate.
        body: dict[str, Any] = {
            "text": text,
            "format": "pcm",
            "stream": True,
            "sample_rate": sample_rate,
        }
        if self.speed is not None:
            body["speed"] = self.speed

        def build() -> httpx.Request:
            return self.ctx.client.build_request(
                "POST",
                f"{self.url}/synthesize",
                json=body,
                headers=engine_headers(self.ctx),
                timeout=self.ctx.http_timeout(),
            )

        response = await open_stream(self.ctx, "internal", build, idempotent=True)
        async with contextlib.aclosing(
            iter_pcm("internal", response, sample_rate, sample_rate)
        ) as chunks:
            async for chunk in chunks:
                yield chunk
