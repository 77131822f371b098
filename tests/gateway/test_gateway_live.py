"""A live conversation over /v1/stream with the real engines (whisper.cpp, SmolLM2 through
llama.cpp, Piper): voice activity detection cuts Piper's speech into turns, a cough-length
burst is ignored, speaking over a long reply stops it and the model's generation at the
engine, and interim transcripts arrive while the user speaks."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
from gatewaykit import Gateway, wer
from websockets.sync.client import ClientConnection, connect

from voice_engines.demo.stack import LocalStack

pytestmark = pytest.mark.engines

RATE = 16_000
QUESTION = "What color is the sky on a clear day?"
SECOND = "Name a fruit that is yellow."
STORY = "Tell me a very long story about a brave little dog and his friends."
INTERRUPTION = "Stop, please tell me what time it is."


def speech(stack: LocalStack, text: str) -> np.ndarray:
    """Piper says the text, as 16 kHz int16 samples."""
    response = httpx.post(
        f"{stack.processes['tts'].url}/synthesize", json={"text": text}, timeout=60
    )
    response.raise_for_status()
    samples, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    return (soxr.resample(samples, rate, RATE) * 32767).astype("<i2")


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype="<i2")


@pytest.fixture(scope="module")
def live(stack: LocalStack) -> Iterator[Gateway]:
    """A gateway on the stack's engines with VAD turn detection, and room for a long
    reply (the model would write for many seconds), so an interruption finds the
    generation still running."""
    routes = stack.routes()
    routes["stages"]["llm"]["settings"] = {"maxTokens": 1500, "temperature": 0.7}
    routes["gateway"] = {"turnDetection": {"mode": "vad", "silenceMs": 500, "minSpeechMs": 250}}
    gateway = Gateway(routes=routes).wait_alive()
    try:
        yield gateway
    finally:
        gateway.stop()


def send(ws: ClientConnection, samples: np.ndarray, pace: float = 0.0) -> None:
    """20 ms frames; pace 1 sends them as a microphone would, 0 as fast as possible."""
    pcm = samples.tobytes()
    for offset in range(0, len(pcm), 640):
        ws.send(pcm[offset : offset + 640])
        if pace:
            time.sleep(0.02 / pace)


def until(ws: ClientConnection, *kinds: str, timeout: float = 60) -> list[Any]:
    """Messages (binary frames as bytes) up to and including the first of kinds."""
    events: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        event = message if isinstance(message, bytes) else json.loads(message)
        events.append(event)
        if isinstance(event, dict) and event["type"] in kinds:
            return events


def of(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if isinstance(e, dict) and e["type"] == kind]


def llm_metric(stack: LocalStack, name: str) -> float:
    text = httpx.get(f"{stack.processes['llm'].url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def vad_stream(stack: LocalStack) -> ClientConnection:
    """A stream on the stack's own gateway (manual by its routes, short replies), the
    client asking for voice activity detection."""
    ws = connect(stack.gateway.url.replace("http://", "ws://") + "/v1/stream", max_size=None)
    ready = json.loads(ws.recv(timeout=10))
    assert ready["turn_detection"] == "manual" and ready["session_id"]
    ws.send(json.dumps({"type": "start", "turn_detection": "vad"}))
    return ws


def test_vad_cuts_speech_with_pauses_into_turns(stack: LocalStack) -> None:
    with vad_stream(stack) as ws:
        # No end message: the silence after each question ends it.
        send(ws, np.concatenate([silence(0.5), speech(stack, QUESTION), silence(1.0)]))
        first = until(ws, "done", "error")
        assert first[-1]["type"] == "done", first[-1]
        assert [e["type"] for e in of(first, "speech_stopped")] == ["speech_stopped"]
        assert of(first, "speech_stopped")[0]["reason"] == "silence"
        assert wer(QUESTION, first[-1]["transcript"]) <= 0.25, first[-1]["transcript"]
        assert first[-1]["timings"]["endpoint_ms"] >= 500

        send(ws, np.concatenate([speech(stack, SECOND), silence(1.0)]))
        second = until(ws, "done", "error")
        assert second[-1]["type"] == "done", second[-1]
        assert wer(SECOND, second[-1]["transcript"]) <= 0.25, second[-1]["transcript"]
        assert second[-1]["turns"] == 2


def test_speaking_over_a_long_reply_stops_it_and_the_generation(
    stack: LocalStack, live: Gateway
) -> None:
    """On a gateway whose routes ask for VAD, and a model allowed a long reply."""
    interruption = speech(stack, INTERRUPTION)
    with connect(live.ws_url, max_size=None) as ws:
        json.loads(ws.recv(timeout=10))
        send(ws, np.concatenate([speech(stack, STORY), silence(1.0)]))
        before = until(ws, "sentence")
        assert not of(before, "error"), before
        # The reply is being spoken (its first audio is here) and the model still writes.
        speaking = until(ws, "token")
        requests = llm_metric(stack, "llm_generation_duration_seconds_count")
        finished = llm_metric(stack, "llm_output_tokens_count")

        # Speech during the reply, without its end yet: barge-in alone stops the reply.
        send(ws, interruption)
        stopped = until(ws, "interrupted", timeout=30)
        assert not of(stopped, "done"), "the reply finished before it was interrupted"
        interrupted = stopped[-1]
        assert interrupted["by"] == "speech"
        reply_so_far = "".join(e["text"] for e in of(before + speaking + stopped, "token"))
        # What the history keeps is a prefix of what was sent, in words.
        kept = interrupted["kept"].split()
        assert kept == reply_so_far.split()[: len(kept)]
        assert interrupted["played_audio_ms"] <= interrupted["sent_audio_ms"]
        assert interrupted["sentences_sent"] >= 1

        # The generation ended at the engine: its request is over without a completion.
        deadline = time.monotonic() + 10
        while llm_metric(stack, "llm_generation_duration_seconds_count") < requests + 1:
            assert time.monotonic() < deadline, "the LLM request is still running"
            time.sleep(0.1)
        assert llm_metric(stack, "llm_output_tokens_count") == finished
        assert live.metric("gateway_interruptions_total", by="speech") >= 1

        # The interruption is the next turn; the interrupted one stays in the history.
        send(ws, silence(1.0))
        answer = until(ws, "done", "error")
        assert answer[-1]["type"] == "done", answer[-1]
        assert wer(INTERRUPTION, answer[-1]["transcript"]) <= 0.35, answer[-1]["transcript"]
        assert answer[-1]["turns"] == 2


def test_a_cough_length_burst_does_not_interrupt(stack: LocalStack) -> None:
    burst = speech(stack, "Hey there, listen.")[int(0.1 * RATE) :][: int(0.15 * RATE)]
    with vad_stream(stack) as ws:
        send(ws, np.concatenate([speech(stack, QUESTION), silence(1.0)]))
        until(ws, "sentence")
        send(ws, np.concatenate([burst, silence(1.0)]))
        events = until(ws, "done", "interrupted", "error")
        assert events[-1]["type"] == "done", events[-1]
        assert not of(events, "speech_stopped")


def test_interim_transcripts_while_the_user_speaks(stack: LocalStack) -> None:
    with vad_stream(stack) as ws:
        # Slower than speech, so that the decodes finish while the user still speaks
        # however loaded the machine is (each one decodes a 30 s window).
        send(ws, np.concatenate([speech(stack, STORY), silence(0.8)]), pace=0.25)
        events = until(ws, "transcript")
        interims = of(events, "interim")
        assert interims, [e.get("type") for e in events if isinstance(e, dict)]
        final = events[-1]["text"]
        assert wer(STORY, final) <= 0.3, final
        # Each interim is a prefix-like reading of the utterance so far.
        assert all(len(i["text"].split()) <= len(final.split()) + 2 for i in interims)
