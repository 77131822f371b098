"""ElevenLabs text to speech, streamed.

Wire format: POST {base}/v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>
with xi-api-key: <key> and JSON {"text", "model_id", "voice_settings"?}; answers raw
16-bit mono PCM at that rate as it is made. Errors are {"detail": {"status",
"message"}} (validation errors: {"detail": [...]})."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from voice_engines.gateway.adapters.base import CallContext
from voice_engines.gateway.adapters.http import iter_pcm, open_stream

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_MODEL = "eleven_flash_v2_5"
# A premade voice every account has.
DEFAULT_VOICE = "JBFqnCBsd6RMkjVDRZzb"
# PCM rates every plan gets (44.1 kHz needs a higher tier): others are resampled here.
PCM_RATES = (8000, 16000, 22050, 24000)


class ElevenLabsSpeech:
    def __init__(
        self,
        ctx: CallContext,
        base: str | None,
        model: str | None,
        voice: str | None,
        key: str,
        speed: float | None,
    ) -> None:
        self.ctx = ctx
        self.base = (base or DEFAULT_BASE_URL).rstrip("/")
        self.model = model or DEFAULT_MODEL
        self.voice = voice or DEFAULT_VOICE
        self.key = key
        self.speed = speed

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        native = sample_rate if sample_rate in PCM_RATES else 24_000
        body: dict[str, Any] = {"text": text, "model_id": self.model}
        if self.speed is not None and self.speed != 1:
            body["voice_settings"] = {"speed": self.speed}

        def build() -> httpx.Request:
            return self.ctx.client.build_request(
                "POST",
                f"{self.base}/v1/text-to-speech/{self.voice}/stream",
                params={"output_format": f"pcm_{native}"},
                json=body,
                headers={"xi-api-key": self.key},
                timeout=self.ctx.http_timeout(),
            )

        response = await open_stream(self.ctx, "elevenlabs", build, idempotent=True)
        async with contextlib.aclosing(
            iter_pcm("elevenlabs", response, native, sample_rate)
        ) as chunks:
            async for chunk in chunks:
                yield chunk
