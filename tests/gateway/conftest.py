"""Fixtures of the gateway tests: fake vendor servers (their documented wire formats over
real HTTP) and, for the engines tier, the real engines with the bundled models, started
once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakevendors import Deepgram, ElevenLabs, OpenAI, ThreadServer

from voice_engines.demo.stack import EXAMPLE_WAV, LocalStack, StackOptions


@pytest.fixture(scope="session")
def question_wav() -> bytes:
    return Path(EXAMPLE_WAV).read_bytes()


@pytest.fixture(scope="session")
def deepgram() -> Iterator[tuple[Deepgram, ThreadServer]]:
    vendor = Deepgram("dg-key-unset")
    with ThreadServer(vendor.app()) as server:
        yield vendor, server


@pytest.fixture(scope="session")
def openai() -> Iterator[tuple[OpenAI, ThreadServer]]:
    vendor = OpenAI("sk-key-unset")
    with ThreadServer(vendor.app()) as server:
        yield vendor, server


@pytest.fixture(scope="session")
def groq() -> Iterator[tuple[OpenAI, ThreadServer]]:
    """Groq speaks OpenAI's format under /openai/v1; a server of its own, so the two
    vendors' keys and failures stay apart."""
    vendor = OpenAI("gsk-key-unset")
    with ThreadServer(vendor.app()) as server:
        yield vendor, server


@pytest.fixture(scope="session")
def elevenlabs() -> Iterator[tuple[ElevenLabs, ThreadServer]]:
    vendor = ElevenLabs("xi-key-unset")
    with ThreadServer(vendor.app()) as server:
        yield vendor, server


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """The STT (whisper.cpp), LLM (llama.cpp) and TTS (Piper) engines and a gateway routing
    to them, as local processes. (The demo's default STT is faster-whisper; the reload
    test switches to it, so both backends serve turns here.)"""
    with LocalStack(StackOptions(stt_backend="whispercpp")) as running:
        yield running
