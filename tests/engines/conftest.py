"""Session fixtures for the engine tests: each model is loaded (or converted, or served)
once per session, and every server runs for real on 127.0.0.1."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginekit import (
    SENTENCES,
    EngineProcess,
    OllamaServer,
    Spoken,
    build_ollama,
    ct2_whisper,
    piper_voice,
    smollm2_gguf,
)


@pytest.fixture(scope="session")
def ggml_model() -> Path:
    """The repo's converter applied to the bundled CTranslate2 Whisper tiny.en, cached
    outside the repo by the source's sha256."""
    from voice_engines.convert.cache import cached_ggml

    return cached_ggml(ct2_whisper())


@pytest.fixture(scope="session")
def spoken() -> list[Spoken]:
    """The fixed sentences spoken by Piper (the library directly, not our service), with
    its noise turned off so every run hears exactly the same audio."""
    import numpy as np
    import soundfile as sf
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(piper_voice())
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    out = []
    for text in SENTENCES:
        chunks = voice.synthesize(text, syn_config=steady)
        audio = np.concatenate([c.audio_float_array for c in chunks])
        buffer = io.BytesIO()
        sf.write(buffer, audio, voice.config.sample_rate, format="WAV", subtype="PCM_16")
        out.append(Spoken(text, buffer.getvalue()))
    return out


def _serve(engine: str, env: dict[str, str]) -> Iterator[EngineProcess]:
    server = EngineProcess(engine, env).wait_ready()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stt_whispercpp(ggml_model: Path) -> Iterator[EngineProcess]:
    yield from _serve(
        "stt", {"STT_BACKEND": "whispercpp", "STT_MODEL_PATH": str(ggml_model), "STT_THREADS": "2"}
    )


@pytest.fixture(scope="session")
def stt_faster_whisper() -> Iterator[EngineProcess]:
    yield from _serve(
        "stt",
        {
            "STT_BACKEND": "faster-whisper",
            "STT_MODEL_PATH": str(ct2_whisper()),
            "STT_MODEL_NAME": "whisper-tiny.en",
            "STT_THREADS": "2",
        },
    )


@pytest.fixture(scope="session")
def tts() -> Iterator[EngineProcess]:
    yield from _serve("tts", {"TTS_VOICE_PATH": str(piper_voice())})


@pytest.fixture(scope="session")
def llm_llamacpp() -> Iterator[EngineProcess]:
    yield from _serve(
        "llm",
        {
            "LLM_BACKEND": "llamacpp",
            "LLM_MODEL_PATH": str(smollm2_gguf()),
            "LLM_MODEL": "smollm2",
            "LLM_THREADS": "2",
            "LLM_TEMPERATURE": "0",
        },
    )


@pytest.fixture(scope="session")
def ollama() -> Iterator[OllamaServer]:
    server = OllamaServer(build_ollama(), smollm2_gguf())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def llm_ollama(ollama: OllamaServer) -> Iterator[EngineProcess]:
    yield from _serve(
        "llm",
        {
            "LLM_BACKEND": "ollama",
            "OLLAMA_BASE_URL": ollama.url,
            "LLM_MODEL": OllamaServer.MODEL,
            "LLM_TEMPERATURE": "0",
        },
    )
