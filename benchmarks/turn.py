"""Voice turn benchmark: time to first audio and total turn time for a ~3 s utterance
through the gateway and the local engines with the bundled models (whisper.cpp tiny.en,
SmolLM2-135M on llama.cpp, Piper joe), per stage, streaming (WebSocket /v1/stream: the
reply spoken a sentence at a time while the model writes) against non-streaming
(POST /v1/turn: one stage after the other, the audio comes with the answer).
Goal: time to first audio <= 1.0 s on 2 CPU cores.

With --live, the conversation as a microphone sends it (20 ms frames in real time):
voice-to-voice latency (end of speech to first reply audio) with VAD endpointing at its
default settings, with and without interim transcripts (both decode at the first pause,
ahead of the end), next to push-to-talk (the end message sent when the speech ends, the
transcript decoded after it); the STT tail after the end of the utterance as a ratio to
push-to-talk's; and barge-in reaction time (the
interrupting speech's first frame to the interrupted message, after which no reply audio
comes). Goals: voice-to-voice <= 0.9 s with VAD, barge-in <= 0.3 s.

    .venv/bin/python benchmarks/turn.py [--repeats N] [--stt faster-whisper|whispercpp]
    .venv/bin/python benchmarks/turn.py --live [--repeats N]
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


GOAL_VOICE_TO_VOICE_S = 0.9
GOAL_BARGE_IN_S = 0.3
FRAME = 640  # 20 ms at 16 kHz


async def _paced(ws: Any, frames: list[bytes]) -> float:
    """Sends frames at the pace of speech; returns when the last one went."""
    started = time.perf_counter()
    for i, frame in enumerate(frames):
        await ws.send(frame)
        await asyncio.sleep(max(0.0, started + (i + 1) * 0.02 - time.perf_counter()))
    return time.perf_counter()


async def live_turn(url: str, speech: list[bytes], mode: str) -> dict[str, float]:
    """One question as a microphone sends it: speech, then silence (vad) or the end
    message (manual, sent with the recording's last frame). Times from the end of speech:
    the recording's last frame less its trailing silence."""
    trailing = leading_silence_s(speech[::-1])
    silence = [bytes(FRAME)] * 60  # 1.2 s
    async with websockets.connect(url.replace("http://", "ws://") + "/v1/stream") as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "start", "turn_detection": mode}))
        speech_end = await _paced(ws, speech) - trailing
        if mode == "manual":
            await ws.send(json.dumps({"type": "end"}))
        else:
            sending = asyncio.create_task(_paced(ws, silence))
        marks: dict[str, float] = {}
        while True:
            message = await ws.recv()
            now = time.perf_counter() - speech_end
            if isinstance(message, bytes):
                marks.setdefault("voice_to_voice", now)
                continue
            event = json.loads(message)
            marks.setdefault(event["type"], now)
            if event["type"] == "error":
                raise RuntimeError(f"turn failed: {event['error']}")
            if event["type"] == "done":
                if mode != "manual":
                    await sending
                timings = event["timings"]
                # Push-to-talk's end of utterance is the end message, after the recording.
                ended = marks.get("speech_stopped", trailing)
                return {
                    "voice_to_voice": marks["voice_to_voice"],
                    "endpointing": ended,
                    "stt_tail": marks["transcript"] - ended,
                    "server_stt_tail": timings.get("stt_tail_ms", 0) / 1000,
                    "stt": timings.get("stt_ms", 0) / 1000,
                }


async def barge_in(url: str, story: list[bytes], interruption: list[bytes]) -> float:
    """Speech onset during a long reply to the interrupted message."""
    async with websockets.connect(url.replace("http://", "ws://") + "/v1/stream") as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "start", "turn_detection": "vad"}))
        await _paced(ws, story + [bytes(FRAME)] * 40)
        while not isinstance(await ws.recv(), bytes):
            pass  # the reply is being spoken
        onset = time.perf_counter()
        sending = asyncio.create_task(_paced(ws, interruption))
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                continue
            event = json.loads(message)
            if event["type"] == "interrupted":
                reaction = time.perf_counter() - onset
                sending.cancel()
                return reaction
            if event["type"] in ("done", "error"):
                raise RuntimeError(f"the reply was not interrupted: {event}")


def leading_silence_s(frames: list[bytes]) -> float:
    """Piper starts (and ends) its audio with a short silence: speech is inside it."""
    import numpy as np

    for i, frame in enumerate(frames):
        if np.abs(np.frombuffer(frame, dtype="<i2")).max() > 1000:
            return i * 0.02
    return 0.0


def live_main(args: argparse.Namespace) -> int:
    print(f"STT backend {args.stt}; load average before: {os.getloadavg()[0]:.2f}")
    runs: dict[str, list[dict[str, float]]] = {"push-to-talk": [], "vad": [], "vad-no-interim": []}
    reactions: list[float] = []
    with LocalStack(StackOptions(stt_backend=args.stt)) as stack:
        question = pcm_frames(args.wav.read_bytes())
        story = pcm_frames(speak(stack, STORY_REQUEST))
        interruption = pcm_frames(speak(stack, "Wait, stop, what time is it now?"))
        onset = leading_silence_s(interruption)
        settings = {"vad": {"interimMs": 600}, "vad-no-interim": {"interimMs": 0}}

        def routes(kind: str, max_tokens: int) -> None:
            document = stack.routes()
            document["stages"]["llm"]["settings"] = {"maxTokens": max_tokens, "temperature": 0}
            document["gateway"] = {"turnDetection": {"mode": "vad", **settings.get(kind, {})}}
            write_routes(stack.routes_path, document)
            time.sleep(2.5)  # the gateway polls the routes file every second

        asyncio.run(live_turn(stack.gateway.url, question, "manual"))  # warm-up
        for _ in range(args.repeats):
            # Alternated, so a burst of other load hits every mode alike.
            for kind in runs:
                routes(kind, 64)
                mode = "manual" if kind == "push-to-talk" else "vad"
                runs[kind].append(asyncio.run(live_turn(stack.gateway.url, question, mode)))
        routes("vad", 400)
        for _ in range(args.repeats):
            reactions.append(asyncio.run(barge_in(stack.gateway.url, story, interruption)) - onset)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print()
    rows = [
        ("endpointing (end of speech to speech_stopped; end sent)", "endpointing"),
        ("STT tail (speech_stopped to transcript)", "stt_tail"),
        ("voice-to-voice (end of speech to first audio)", "voice_to_voice"),
    ]
    print(f"### live turn ({args.repeats} each, median and best; client clock)")
    print()
    print("| | push-to-talk | VAD | VAD, no interim |")
    print("|---|---|---|---|")
    for label, key in rows:
        cells = [summarize(runs[k], key) for k in ("push-to-talk", "vad", "vad-no-interim")]
        print(f"| {label} | {' | '.join(cells)} |")
    print()
    tails = {k: statistics.median(r["stt_tail"] for r in v) for k, v in runs.items()}
    baseline = tails["push-to-talk"]  # decoded only after the end of the utterance
    print(
        f"STT tail / push-to-talk's: VAD with interims {tails['vad'] / baseline:.2f}, "
        f"VAD without interims {tails['vad-no-interim'] / baseline:.2f}"
    )
    voice = statistics.median(r["voice_to_voice"] for r in runs["vad"])
    reaction = statistics.median(reactions)
    print(f"barge-in reaction (speech onset to interrupted), median: {reaction:.2f} s")
    print(
        f"goals: voice-to-voice <= {GOAL_VOICE_TO_VOICE_S} s with VAD: "
        f"{'met' if voice <= GOAL_VOICE_TO_VOICE_S else 'NOT met'} ({voice:.2f} s); "
        f"barge-in <= {GOAL_BARGE_IN_S} s: "
        f"{'met' if reaction <= GOAL_BARGE_IN_S else 'NOT met'} ({reaction:.2f} s)"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stt", choices=("faster-whisper", "whispercpp"), default="faster-whisper")
    parser.add_argument("--wav", type=Path, default=EXAMPLE_WAV)
    parser.add_argument("--live", action="store_true", help="VAD, interim, barge-in figures")
    args = parser.parse_args()
    if args.live:
        return live_main(args)

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
