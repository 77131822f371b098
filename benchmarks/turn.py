"""Voice turn benchmark: time to first audio and total turn time for a ~3 s utterance
through the gateway and the local engines with the bundled models (whisper.cpp tiny.en,
SmolLM2-135M on llama.cpp, Piper joe), per stage, streaming (WebSocket /v1/stream: the
reply spoken a sentence at a time while the model writes) against non-streaming
(POST /v1/turn: one stage after the other, the audio comes with the answer).
Goal: time to first audio <= 1.0 s on 2 CPU cores.

    .venv/bin/python benchmarks/turn.py [--repeats N] [--stt faster-whisper|whispercpp]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import soundfile as sf
import soxr
import websockets

from voice_engines.demo.stack import EXAMPLE_WAV, LocalStack, StackOptions, write_routes

GOAL_FIRST_AUDIO_S = 1.0
# Two kinds of answer: the example question's short reply, and a story of many
# sentences (asked by Piper through the TTS engine), where speaking while the model
# writes matters most.
STORY_REQUEST = "Please tell me a long story about a brave little dog."
SCENARIOS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "short answer": (None, {"maxTokens": 64, "temperature": 0}),
    "long answer": (
        STORY_REQUEST,
        {
            "maxTokens": 128,
            "temperature": 0,
            "systemPrompt": "You are a storyteller. Tell long stories in many short sentences.",
        },
    ),
}


def pcm_frames(wav: bytes) -> list[bytes]:
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    pcm = (soxr.resample(samples, rate, 16_000) * 32767).astype("<i2").tobytes()
    return [pcm[i : i + 640] for i in range(0, len(pcm), 640)]


def speak(stack: LocalStack, text: str) -> bytes:
    response = httpx.post(
        f"{stack.processes['tts'].url}/synthesize", json={"text": text}, timeout=60
    )
    response.raise_for_status()
    return response.content


def turn_http(url: str, wav: bytes) -> dict[str, float]:
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/turn", files={"file": ("q.wav", wav, "audio/wav")}, timeout=300
    )
    total = time.perf_counter() - started
    body = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"turn failed: {body}")
    timings = {k: v / 1000 for k, v in body["timings"].items()}
    # The audio arrives with the answer: the first audio is the whole turn.
    return {**timings, "client_first_audio": total, "client_total": total}


async def turn_ws(url: str, frames: list[bytes]) -> dict[str, float]:
    ws_url = url.replace("http://", "ws://") + "/v1/stream"
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.recv()
        for frame in frames:
            await ws.send(frame)
        await ws.send(json.dumps({"type": "end"}))
        sent = time.perf_counter()
        first_audio = None
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                first_audio = first_audio or time.perf_counter() - sent
                continue
            event = json.loads(message)
            if event["type"] == "error":
                raise RuntimeError(f"turn failed: {event['error']}")
            if event["type"] == "done":
                timings = {k: v / 1000 for k, v in event["timings"].items()}
                return {
                    **timings,
                    "client_first_audio": first_audio or float("nan"),
                    "client_total": time.perf_counter() - sent,
                }


ROWS = [
    ("STT", "stt_ms"),
    ("LLM first token", "llm_first_token_ms"),
    ("LLM whole reply", "llm_ms"),
    ("TTS (all calls)", "tts_ms"),
    ("first piece ready to speak", "first_piece_ms"),
    ("time to first audio (client)", "client_first_audio"),
    ("turn total (client)", "client_total"),
]


def summarize(samples: list[dict[str, float]], key: str) -> str:
    values = [s.get(key.removesuffix("_ms"), float("nan")) for s in samples]
    values = [v for v in values if v == v]
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} s (best {min(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stt", choices=("faster-whisper", "whispercpp"), default="faster-whisper")
    parser.add_argument("--wav", type=Path, default=EXAMPLE_WAV)
    args = parser.parse_args()

    print(f"STT backend {args.stt}; engine env {StackOptions().engine_env}")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with LocalStack(StackOptions(stt_backend=args.stt)) as stack:
        for scenario, (request, llm_settings) in SCENARIOS.items():
            wav = args.wav.read_bytes() if request is None else speak(stack, request)
            frames = pcm_frames(wav)
            seconds = sf.info(io.BytesIO(wav)).duration
            print(f"{scenario}: utterance of {seconds:.2f} s", flush=True)
            stack.options.llm_settings = {**llm_settings, "contextSize": 2048}
            write_routes(stack.routes_path, stack.routes())
            time.sleep(2.5)  # the gateway polls the routes file every second
            runs: dict[str, list[dict[str, float]]] = {"non-streaming": [], "streaming": []}
            turn_http(stack.gateway.url, wav)  # warm-up: first calls pay one-time costs
            asyncio.run(turn_ws(stack.gateway.url, frames))
            for _ in range(args.repeats):
                # Alternated, so a burst of other load hits both modes alike.
                runs["non-streaming"].append(_seconds(turn_http(stack.gateway.url, wav)))
                runs["streaming"].append(_seconds(asyncio.run(turn_ws(stack.gateway.url, frames))))
            results[scenario] = runs
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print()
    met = True
    for scenario, runs in results.items():
        print(f"### {scenario} ({args.repeats} turns each, median and best)")
        print()
        print("| stage | non-streaming (POST /v1/turn) | streaming (WS /v1/stream) |")
        print("|---|---|---|")
        for label, key in ROWS:
            cells = [summarize(runs[mode], key) for mode in ("non-streaming", "streaming")]
            print(f"| {label} | {cells[0]} | {cells[1]} |")
        print()
        first_audio = statistics.median(r["client_first_audio"] for r in runs["streaming"])
        met = met and first_audio <= GOAL_FIRST_AUDIO_S
    verdict = "met" if met else "NOT met"
    print(f"goal: streaming time to first audio <= {GOAL_FIRST_AUDIO_S:.1f} s (median): {verdict}")
    return 0


def _seconds(timings: dict[str, Any]) -> dict[str, float]:
    """Server timings keyed without the _ms suffix (already in seconds)."""
    return {k.removesuffix("_ms"): float(v) for k, v in timings.items()}


if __name__ == "__main__":
    sys.exit(main())
