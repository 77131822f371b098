"""The gateway with the real engines and the bundled models (whisper.cpp tiny.en,
SmolLM2-135M through llama.cpp, Piper joe): a full spoken turn, the WebSocket stream
speaking before the model has finished, and routes reloaded under steady traffic."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import soundfile as sf
import soxr
from gatewaykit import Gateway, turn, wer
from websockets.sync.client import connect

from voice_engines.demo.stack import LocalProcess, LocalStack, internal_route, whisper_env

pytestmark = pytest.mark.engines

QUESTION = "What color is the sky on a clear day?"
STORY = "Tell me a long story about a brave little dog."


def speak(stack: LocalStack, text: str) -> bytes:
    """Piper, through our TTS engine, says the text (22.05 kHz WAV)."""
    response = httpx.post(
        f"{stack.processes['tts'].url}/synthesize", json={"text": text}, timeout=60
    )
    response.raise_for_status()
    return response.content


def hear(stack: LocalStack, wav: bytes) -> str:
    """What our STT engine hears in a WAV."""
    response = httpx.post(
        f"{stack.processes['stt'].url}/transcribe",
        files={"file": ("a.wav", wav, "audio/wav")},
        timeout=60,
    )
    response.raise_for_status()
    return str(response.json()["text"])


def test_a_full_turn_through_real_engines(stack: LocalStack) -> None:
    question = speak(stack, QUESTION)
    response = turn(stack.gateway.url, question)
    assert response.status_code == 200, response.text
    body = response.json()
    assert wer(QUESTION, body["transcript"]) <= 0.25, body["transcript"]
    assert body["reply"].strip()
    assert all(p["provider"] == "internal" for p in body["providers"].values())
    assert set(body["timings"]) >= {"stt_ms", "llm_first_token_ms", "llm_ms", "tts_ms", "total_ms"}
    reply_wav = base64.b64decode(body["audio"]["base64"])
    samples, rate = sf.read(io.BytesIO(reply_wav))
    assert rate == body["audio"]["sample_rate"] == 22050
    assert len(samples) / rate == pytest.approx(body["audio"]["seconds"], abs=0.01)
    # The reply audio says the reply: what STT hears in it matches the reply text.
    heard = hear(stack, reply_wav)
    assert wer(body["reply"], heard) <= 0.3, (body["reply"], heard)


def pcm16k(wav: bytes) -> list[bytes]:
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    pcm = (soxr.resample(samples, rate, 16000) * 32767).astype("<i2").tobytes()
    return [pcm[i : i + 640] for i in range(0, len(pcm), 640)]


def stream_events(url: str, frames: list[bytes]) -> list[Any]:
    events: list[Any] = []
    with connect(url, max_size=None) as ws:
        json.loads(ws.recv(timeout=30))
        for frame in frames:
            ws.send(frame)
        ws.send(json.dumps({"type": "end"}))
        while True:
            message = ws.recv(timeout=120)
            events.append(message if isinstance(message, bytes) else json.loads(message))
            if isinstance(events[-1], dict) and events[-1]["type"] in ("done", "error"):
                return events


def routes_to(stack: LocalStack, tag: str, stt_url: str | None = None, **llm: Any) -> dict:
    p = stack.processes
    settings = {**stack.options.llm_settings, **llm}
    return {
        "agent": "test",
        "namespace": "test",
        "stages": {
            "stt": internal_route(
                stt_url or p["stt"].url, f"stt-{tag}", "whisper", {"language": "en"}
            ),
            "llm": internal_route(p["llm"].url, f"llm-{tag}", "smollm2", settings),
            "tts": internal_route(p["tts"].url, f"tts-{tag}", "joe", {"speed": 1}),
        },
    }


@pytest.fixture(scope="module")
def storyteller(stack: LocalStack) -> Iterator[Gateway]:
    """A gateway whose model tells long stories, so there is a lot left to write when
    the first sentence is ready to be spoken."""
    routes = routes_to(
        stack,
        "story",
        maxTokens=160,
        temperature=0,
        systemPrompt="You are a storyteller. Tell long stories in many short sentences.",
    )
    gateway = Gateway(routes=routes).wait_alive()
    yield gateway
    gateway.stop()


def test_the_stream_speaks_before_the_model_has_finished(
    stack: LocalStack, storyteller: Gateway
) -> None:
    events = stream_events(storyteller.ws_url, pcm16k(speak(stack, STORY)))
    kinds = ["audio" if isinstance(e, bytes) else e["type"] for e in events]
    assert kinds[-1] == "done", events[-1]
    first_audio = kinds.index("audio")
    # The model was still writing when the first audio left: tokens came after it, and
    # the end of the reply came later still.
    assert "token" in kinds[first_audio:]
    assert first_audio < kinds.index("reply")
    sentences = [e["text"] for e in events if isinstance(e, dict) and e["type"] == "sentence"]
    assert len(sentences) >= 2
    done = events[-1]
    assert " ".join(sentences).split() == done["reply"].split()
    assert done["timings"]["first_audio_ms"] < done["timings"]["total_ms"]
    audio = b"".join(e for e in events if isinstance(e, bytes))
    assert len(audio) / 2 / 22050 > 2.0


@pytest.fixture(scope="module")
def second_stt() -> Iterator[LocalProcess]:
    """faster-whisper on the CTranslate2 original: the other STT the routes switch to."""
    import tempfile
    from pathlib import Path

    process = LocalProcess(
        "stt-faster-whisper",
        "voice_engines.stt.main",
        {**whisper_env("faster-whisper"), "STT_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
        Path(tempfile.mkdtemp(prefix="voice-stt-fw-")),
    )
    try:
        process.wait_ready(180)
        yield process
    finally:
        process.stop()


@dataclass(frozen=True)
class Attempt:
    """One turn a client tried: the providers that served it, or what went wrong."""

    client: str
    providers: dict[str, Any] | None = None
    error: BaseException | None = None


class SteadyTraffic:
    """Clients that take turns until stopped, each on its own thread; every attempt is
    recorded, and a client's first failure ends that client (the test fails on it)."""

    def __init__(self, clients: dict[str, Callable[[], dict[str, Any]]]) -> None:
        self.stop = threading.Event()
        self.attempts: list[Attempt] = []
        self.lock = threading.Lock()
        self.workers = [
            threading.Thread(target=self._client, args=(name, f), name=name, daemon=True)
            for name, f in clients.items()
        ]

    def _client(self, name: str, one_turn: Callable[[], dict[str, Any]]) -> None:
        while not self.stop.is_set():
            try:
                attempt = Attempt(name, providers=one_turn())
            except BaseException as exc:  # connection reset, timeout, bad body, ...
                attempt = Attempt(name, error=exc)
            with self.lock:
                self.attempts.append(attempt)
            if attempt.error is not None:
                return

    def tally(self) -> tuple[int, int]:
        with self.lock:
            return sum(a.error is None for a in self.attempts), sum(
                a.error is not None for a in self.attempts
            )

    def running(self) -> bool:
        return all(w.is_alive() for w in self.workers)


def test_routes_reloaded_under_steady_traffic(stack: LocalStack, second_stt: LocalProcess) -> None:
    stt_urls = [stack.processes["stt"].url, second_stt.url]
    gateway = Gateway(routes=routes_to(stack, "g0", stt_urls[0], maxTokens=12)).wait_alive()
    question = speak(stack, QUESTION)
    frames = pcm16k(question)

    def http_turn() -> dict[str, Any]:
        response = turn(gateway.url, question)
        if response.status_code != 200:
            raise AssertionError(f"HTTP {response.status_code}: {response.text[:500]}")
        return dict(response.json()["providers"])

    def ws_turn() -> dict[str, Any]:
        done = stream_events(gateway.ws_url, frames)[-1]
        if done["type"] != "done":
            raise AssertionError(f"the stream ended with {done}")
        return dict(done["providers"])

    clients = {"http-1": http_turn, "http-2": http_turn, "ws": ws_turn}
    traffic = SteadyTraffic(clients)
    workers, lock, attempts = traffic.workers, traffic.lock, traffic.attempts
    try:
        for worker in workers:
            worker.start()
        # Swap the routes every 0.7 s until a dozen turns are through: most of them run
        # across a swap. A failed turn or a client that stopped ends the wait early.
        generation, deadline = 0, time.monotonic() + 300
        while time.monotonic() < deadline and traffic.running():
            succeeded, failed = traffic.tally()
            if succeeded >= 12 or failed:
                break
            time.sleep(0.7)
            generation += 1
            tag, stt_url = f"g{generation}", stt_urls[generation % 2]
            gateway.apply(routes_to(stack, tag, stt_url, maxTokens=12))
    finally:
        traffic.stop.set()
        # The turns in flight finish (and are recorded) within the turn timeout.
        join_until = time.monotonic() + 150
        for worker in workers:
            worker.join(timeout=max(0.0, join_until - time.monotonic()))
        gateway.stop()

    hung = [w.name for w in workers if w.is_alive()]
    assert hung == [], f"clients still in a turn after the join: {hung}"
    with lock:
        recorded = list(attempts)
    failures = [f"{a.client}: {type(a.error).__name__}: {a.error}" for a in recorded if a.error]
    assert failures == []
    assert len(recorded) >= 12, f"only {len(recorded)} turns ran before the deadline"
    # Every client kept turning: each finished turns of its own.
    assert {a.client for a in recorded} == set(clients)
    # Each turn ran start to end on the routes it began with: one generation per turn.
    generations = []
    for attempt in recorded:
        assert attempt.providers is not None
        tags = {p["revision"].split("-")[1] for p in attempt.providers.values()}
        assert len(tags) == 1, attempt.providers
        generations.append(tags.pop())
    assert len(set(generations)) >= 3
