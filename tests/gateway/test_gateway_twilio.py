"""A phone call through /v1/twilio with the real engines: a local client sends exactly
Twilio Media Streams' messages (connected, start, media with base64 8 kHz mu-law, stop),
Piper's question comes back answered as media and marks, speaking over the answer brings
clear; and what 8 kHz mu-law costs the transcription."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
from gatewaykit import wer
from websockets.sync.client import ClientConnection, connect

from voice_engines.demo.stack import LocalStack
from voice_engines.gateway.audio import pcm_to_wav
from voice_engines.gateway.twilio import mulaw_to_pcm, pcm_to_mulaw

pytestmark = pytest.mark.engines

QUESTION = "What color is the sky on a clear day?"
STORY = "Tell me a very long story about a brave little dog and his friends."
STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA8a0cc0d8bf1f4cb5a8a2d8f4c2f1e7a1"


def phone_speech(stack: LocalStack, text: str) -> bytes:
    """Piper says the text, as a phone line carries it: 8 kHz mu-law."""
    response = httpx.post(
        f"{stack.processes['tts'].url}/synthesize", json={"text": text}, timeout=60
    )
    response.raise_for_status()
    samples, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    pcm = (soxr.resample(samples, rate, 8000) * 32767).astype("<i2").tobytes()
    return pcm_to_mulaw(pcm)


def hear(stack: LocalStack, pcm: bytes, rate: int) -> str:
    response = httpx.post(
        f"{stack.processes['stt'].url}/transcribe",
        files={"file": ("a.wav", pcm_to_wav(pcm, rate), "audio/wav")},
        timeout=60,
    )
    response.raise_for_status()
    return str(response.json()["text"])


def call(stack: LocalStack) -> ClientConnection:
    ws = connect(stack.gateway.url.replace("http://", "ws://") + "/v1/twilio", max_size=None)
    ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    ws.send(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "AC00000000000000000000000000000000",
                    "streamSid": STREAM_SID,
                    "callSid": CALL_SID,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {},
                },
                "streamSid": STREAM_SID,
            }
        )
    )
    return ws


class Media:
    def __init__(self) -> None:
        self.sequence = 1
        self.chunk = 0

    def send(self, ws: ClientConnection, mulaw: bytes) -> None:
        for offset in range(0, len(mulaw), 160):  # 20 ms, as Twilio sends it
            self.sequence += 1
            self.chunk += 1
            ws.send(
                json.dumps(
                    {
                        "event": "media",
                        "sequenceNumber": str(self.sequence),
                        "media": {
                            "track": "inbound",
                            "chunk": str(self.chunk),
                            "timestamp": str(self.chunk * 20),
                            "payload": base64.b64encode(mulaw[offset : offset + 160]).decode(),
                        },
                        "streamSid": STREAM_SID,
                    }
                )
            )


def until(ws: ClientConnection, event: str, timeout: float = 90) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        messages.append(message)
        if message["event"] == event:
            return messages


SILENCE = pcm_to_mulaw(bytes(8000 * 2))  # 1 s


def test_a_call_is_answered_in_twilio_media_messages(stack: LocalStack) -> None:
    media = Media()
    with call(stack) as ws:
        media.send(ws, phone_speech(stack, QUESTION) + SILENCE)
        messages = until(ws, "mark")
        replies = [m for m in messages if m["event"] == "media"]
        assert replies and all(m["streamSid"] == STREAM_SID for m in messages)
        # The rest of the reply, to the mark after its last sentence (done).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                message = json.loads(ws.recv(timeout=3))
            except TimeoutError:
                break
            messages.append(message)
        audio = b"".join(
            mulaw_to_pcm(base64.b64decode(m["media"]["payload"]))
            for m in messages
            if m["event"] == "media"
        )
        ws.send(json.dumps({"event": "stop", "streamSid": STREAM_SID, "stop": {}}))
    assert {m["event"] for m in messages} <= {"media", "mark"}
    # The reply, spoken at 8 kHz: our STT hears words in it.
    heard = hear(stack, audio, 8000)
    assert len(heard.split()) >= 3, heard


def test_speaking_over_the_answer_clears_twilios_queue(stack: LocalStack) -> None:
    media = Media()
    with call(stack) as ws:
        media.send(ws, phone_speech(stack, STORY) + SILENCE)
        until(ws, "media")
        media.send(ws, phone_speech(stack, QUESTION))
        messages = until(ws, "clear", timeout=60)
        assert messages[-1] == {"event": "clear", "streamSid": STREAM_SID}


def test_what_8_khz_mu_law_costs_the_transcription(stack: LocalStack) -> None:
    response = httpx.post(
        f"{stack.processes['tts'].url}/synthesize", json={"text": QUESTION}, timeout=60
    )
    samples, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    wide = (soxr.resample(samples, rate, 16000) * 32767).astype("<i2").tobytes()
    phone = mulaw_to_pcm(phone_speech(stack, QUESTION))
    wide_wer = wer(QUESTION, hear(stack, wide, 16000))
    phone_wer = wer(QUESTION, hear(stack, phone, 8000))
    print(f"WER 16 kHz PCM {wide_wer:.3f}, 8 kHz mu-law {phone_wer:.3f}")
    assert phone_wer <= 0.25
    assert np.isfinite(phone_wer)
