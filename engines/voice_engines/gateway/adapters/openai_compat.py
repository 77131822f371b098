"""Any OpenAI-compatible API: chat completions (OpenAI, Groq, a custom base URL, and our
own LLM engine), audio transcriptions and audio speech.

Wire format: Authorization: Bearer <key>; POST {base}/chat/completions with "stream":
true answers Server-Sent Events ("data: {chat.completion.chunk}" lines, then
"data: [DONE]"; usage in the last chunk with stream_options.include_usage, or in
x_groq.usage); POST {base}/audio/transcriptions (multipart: file, model, language,
temperature, response_format=json) answers {"text"}; POST {base}/audio/speech (JSON:
model, input, voice, response_format=pcm, speed) answers raw 16-bit mono PCM at 24 kHz.
Errors are {"error": {"message", "type", "code"}}."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from voice_engines.gateway.adapters.base import (
    CallContext,
    ChatParams,
    LlmDelta,
    Message,
    ProviderError,
    Transcript,
)
from voice_engines.gateway.adapters.http import iter_lines, iter_pcm, open_stream, request_json

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
}
DEFAULT_CHAT_MODELS = {"openai": "gpt-4o-mini", "groq": "llama-3.1-8b-instant"}
DEFAULT_TRANSCRIPTION_MODEL = "whisper-1"
DEFAULT_SPEECH_MODEL = "tts-1"
DEFAULT_VOICE = "alloy"
# OpenAI's "pcm" speech format; a server that says otherwise in X-Sample-Rate (our TTS
# engine does) is believed.
SPEECH_PCM_RATE = 24_000


def base_url(vendor: str, url: str | None) -> str:
    return (url or DEFAULT_BASE_URLS.get(vendor) or DEFAULT_BASE_URLS["openai"]).rstrip("/")


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


class OpenAiChat:
    def __init__(
        self,
        ctx: CallContext,
        provider: str,
        base: str,
        model: str,
        key: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.ctx, self.provider, self.base, self.model, self.key = ctx, provider, base, model, key
        # Extra headers of every call (our LLM engine: the turn's correlation id).
        self.headers = dict(headers or {})

    def _build(self, messages: list[Message], params: ChatParams) -> httpx.Request:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.temperature is not None:
            body["temperature"] = params.temperature
        return self.ctx.client.build_request(
            "POST",
            f"{self.base}/chat/completions",
            json=body,
            headers={**self.headers, **_auth(self.key), "Accept": "text/event-stream"},
            timeout=self.ctx.http_timeout(),
        )

    async def stream(self, messages: list[Message], params: ChatParams) -> AsyncIterator[LlmDelta]:
        # Not idempotent: a completion may be billed and is not repeated once sent.
        response = await open_stream(
            self.ctx, self.provider, lambda: self._build(messages, params), idempotent=False
        )
        async with contextlib.aclosing(iter_lines(self.provider, response)) as lines:
            async for line in lines:
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                for delta in self._parse(data):
                    yield delta

    def _parse(self, data: str) -> list[LlmDelta]:
        try:
            event = json.loads(data)
        except ValueError:
            raise ProviderError(
                "bad_response", f"{self.provider} sent an event that is not JSON"
            ) from None
        if not isinstance(event, dict):
            raise ProviderError("bad_response", f"{self.provider} sent an unexpected event")
        if "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise ProviderError(
                "unavailable",
                f"{self.provider} failed mid-stream: {self.ctx.secrets.scrub(str(message))}",
            )
        out = []
        for choice in event.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                out.append(LlmDelta(content))
        usage = event.get("usage") or (event.get("x_groq") or {}).get("usage")
        if isinstance(usage, dict) and "completion_tokens" in usage:
            out.append(
                LlmDelta("", int(usage.get("prompt_tokens", 0)), int(usage["completion_tokens"]))
            )
        return out


class OpenAiTranscription:
    def __init__(
        self,
        ctx: CallContext,
        provider: str,
        base: str,
        model: str,
        key: str | None,
        temperature: float | None,
    ) -> None:
        self.ctx, self.provider, self.base, self.model = ctx, provider, base, model
        self.key, self.temperature = key, temperature

    async def transcribe(self, wav: bytes, language: str | None) -> Transcript:
        form = {"model": self.model, "response_format": "json"}
        if language:
            form["language"] = language
        if self.temperature is not None:
            form["temperature"] = str(self.temperature)

        def build() -> httpx.Request:
            return self.ctx.client.build_request(
                "POST",
                f"{self.base}/audio/transcriptions",
                data=form,
                files={"file": ("audio.wav", wav, "audio/wav")},
                headers=_auth(self.key),
                timeout=self.ctx.http_timeout(),
            )

        document = await request_json(self.ctx, self.provider, build, idempotent=True)
        text = document.get("text") if isinstance(document, dict) else None
        if not isinstance(text, str):
            raise ProviderError("bad_response", f"{self.provider} answered without a text field")
        return Transcript(text.strip())


class OpenAiSpeech:
    def __init__(
        self,
        ctx: CallContext,
        provider: str,
        base: str,
        model: str,
        voice: str,
        key: str | None,
        speed: float | None,
    ) -> None:
        self.ctx, self.provider, self.base, self.model = ctx, provider, base, model
        self.voice, self.key, self.speed = voice, key, speed

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        body: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": "pcm",
        }
        if self.speed is not None:
            body["speed"] = self.speed

        def build() -> httpx.Request:
            return self.ctx.client.build_request(
                "POST",
                f"{self.base}/audio/speech",
                json=body,
                headers=_auth(self.key),
                timeout=self.ctx.http_timeout(),
            )

        response = await open_stream(self.ctx, self.provider, build, idempotent=True)
        native = int(response.headers.get("x-sample-rate") or SPEECH_PCM_RATE)
        async with contextlib.aclosing(
            iter_pcm(self.provider, response, native, sample_rate)
        ) as chunks:
            async for chunk in chunks:
                yield chunk
