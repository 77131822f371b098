"""Deepgram pre-recorded transcription.

Wire format: POST {base}/v1/listen?model=...&language=...&smart_format=true with the
raw audio as the body (Content-Type: audio/wav) and Authorization: Token <key>; answers
{"metadata": {...}, "results": {"channels": [{"alternatives": [{"transcript", ...}]}]}}.
Errors are {"err_code", "err_msg", "request_id"}."""

from __future__ import annotations

from typing import Any

import httpx

from voice_engines.gateway.adapters.base import CallContext, ProviderError, Transcript
from voice_engines.gateway.adapters.http import request_json

DEFAULT_BASE_URL = "https://api.deepgram.com"
DEFAULT_MODEL = "nova-3"


class DeepgramTranscription:
    def __init__(self, ctx: CallContext, base: str | None, model: str | None, key: str) -> None:
        self.ctx = ctx
        self.base = (base or DEFAULT_BASE_URL).rstrip("/")
        self.model = model or DEFAULT_MODEL
        self.key = key

    async def transcribe(self, wav: bytes, language: str | None) -> Transcript:
        params = {"model": self.model, "smart_format": "true"}
        if language:
            params["language"] = language

        def build() -> httpx.Request:
            return self.ctx.client.build_request(
                "POST",
                f"{self.base}/v1/listen",
                params=params,
                content=wav,
                headers={"Authorization": f"Token {self.key}", "Content-Type": "audio/wav"},
                timeout=self.ctx.http_timeout(),
            )

        document = await request_json(self.ctx, "deepgram", build, idempotent=True)
        return Transcript(_transcript(document).strip())


def _transcript(document: Any) -> str:
    try:
        text = document["results"]["channels"][0]["alternatives"][0]["transcript"]
    except (KeyError, IndexError, TypeError):
        raise ProviderError(
            "bad_response", "deepgram answered without results.channels[0].alternatives[0]"
        ) from None
    if not isinstance(text, str):
        raise ProviderError("bad_response", "deepgram's transcript is not a string")
    return text
