"""Provider adapters, one small module per vendor, and the choice of adapter for a
route. Keys are read here, when a call starts, so a Secret created or rotated after the
gateway started is picked up without a restart."""

from __future__ import annotations

from voice_engines.gateway.adapters import deepgram, elevenlabs, openai_compat
from voice_engines.gateway.adapters.base import (
    CallContext,
    ChatModel,
    ProviderError,
    SpeechToText,
    TextToSpeech,
)
from voice_engines.gateway.adapters.http import api_key
from voice_engines.gateway.adapters.internal import (
    InternalSpeechToText,
    InternalTextToSpeech,
    engine_headers,
)
from voice_engines.gateway.routes import StageRoute, stt_settings, tts_settings


def _key(ctx: CallContext, route: StageRoute) -> str:
    return api_key(ctx, route.api_key_file, route.api_key_env)


def speech_to_text(ctx: CallContext, route: StageRoute) -> SpeechToText:
    temperature = stt_settings(route).temperature
    if route.provider == "internal":
        assert route.url is not None
        return InternalSpeechToText(ctx, route.url, temperature)
    if route.vendor == "deepgram":
        return deepgram.DeepgramTranscription(ctx, route.url, route.model, _key(ctx, route))
    if route.vendor == "openai":
        return openai_compat.OpenAiTranscription(
            ctx,
            "openai",
            openai_compat.base_url("openai", route.url),
            route.model or openai_compat.DEFAULT_TRANSCRIPTION_MODEL,
            _key(ctx, route),
            temperature,
        )
    raise ProviderError("rejected", f"no speech-to-text adapter for vendor {route.vendor!r}")


def chat_model(ctx: CallContext, route: StageRoute) -> ChatModel:
    if route.provider == "internal":
        assert route.url is not None
        # The engine serves whatever model it loaded, whatever the name says.
        return openai_compat.OpenAiChat(
            ctx,
            "internal",
            f"{route.url.rstrip('/')}/v1",
            route.model or "local",
            None,
            headers=engine_headers(ctx),
        )
    vendor = str(route.vendor)
    if vendor not in openai_compat.DEFAULT_BASE_URLS:
        raise ProviderError("rejected", f"no chat adapter for vendor {vendor!r}")
    return openai_compat.OpenAiChat(
        ctx,
        vendor,
        openai_compat.base_url(vendor, route.url),
        route.model or openai_compat.DEFAULT_CHAT_MODELS[vendor],
        _key(ctx, route),
    )


def text_to_speech(ctx: CallContext, route: StageRoute) -> TextToSpeech:
    speed = tts_settings(route).speed
    if route.provider == "internal":
        assert route.url is not None
        return InternalTextToSpeech(ctx, route.url, speed)
    if route.vendor == "elevenlabs":
        return elevenlabs.ElevenLabsSpeech(
            ctx, route.url, route.model, route.voice, _key(ctx, route), speed
        )
    if route.vendor == "openai":
        return openai_compat.OpenAiSpeech(
            ctx,
            "openai",
            openai_compat.base_url("openai", route.url),
            route.model or openai_compat.DEFAULT_SPEECH_MODEL,
            route.voice or openai_compat.DEFAULT_VOICE,
            _key(ctx, route),
            speed,
        )
    raise ProviderError("rejected", f"no text-to-speech adapter for vendor {route.vendor!r}")


__all__ = ["CallContext", "ProviderError", "chat_model", "speech_to_text", "text_to_speech"]
