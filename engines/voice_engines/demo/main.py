"""voice-demo: one real voice turn on this machine. Starts the STT, LLM and TTS engines
with the bundled models and the gateway as local processes, sends a WAV through
POST /v1/turn (or the WebSocket stream with --stream), prints what came back, and stops
everything it started, also on Ctrl-C or an error."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from voice_engines.demo.stack import EXAMPLE_WAV, LocalStack, StackOptions, whisper_env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="voice-demo",
        description="Run one voice turn through local engines and the gateway.",
    )
    parser.add_argument("--wav", type=Path, default=EXAMPLE_WAV, help="the question (any WAV)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the reply WAV and logs go (default: a temp dir)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="use the WebSocket stream (audio a sentence at a time) instead of POST /v1/turn",
    )
    parser.add_argument(
        "--stt",
        choices=("faster-whisper", "whispercpp"),
        default="faster-whisper",
        help="STT backend (whispercpp converts the bundled model to ggml once, cached)",
    )
    parser.add_argument("--threads", type=int, default=2, help="threads per engine")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the turn, keep everything running until Ctrl-C (prints the URLs)",
    )
    return parser.parse_args(argv)


def turn_over_http(gateway: str, wav: bytes) -> tuple[dict[str, Any], bytes]:
    response = httpx.post(
        f"{gateway}/v1/turn", files={"file": ("question.wav", wav, "audio/wav")}, timeout=300
    )
    body = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"the turn failed ({response.status_code}): {body.get('error')}")
    return body, base64.b64decode(body["audio"]["base64"])


async def _turn_over_ws(gateway: str, wav: bytes) -> tuple[dict[str, Any], bytes]:
    import numpy as np
    import websockets

    from voice_engines.common.audio import decode_audio, to_mono_at
    from voice_engines.gateway.audio import pcm_to_wav

    samples, rate = decode_audio(wav)
    pcm = (np.clip(to_mono_at(samples, rate, 16_000), -1, 1) * 32767).astype("<i2").tobytes()
    url = gateway.replace("http://", "ws://") + "/v1/stream"
    audio = bytearray()
    first_audio: float | None = None
    async with websockets.connect(url, max_size=None) as ws:
        ready = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "start", "sample_rate": 16_000}))
        for offset in range(0, len(pcm), 640):  # 20 ms frames, as a microphone sends them
            await ws.send(pcm[offset : offset + 640])
        await ws.send(json.dumps({"type": "end"}))
        sent = time.perf_counter()
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                first_audio = first_audio or time.perf_counter() - sent
                audio.extend(message)
                continue
            event = json.loads(message)
            if event["type"] == "error":
                raise RuntimeError(f"the turn failed: {event['error']}")
            if event["type"] == "done":
                event["timings"]["client_first_audio_ms"] = round((first_audio or 0) * 1000, 1)
                rate = ready["output_sample_rate"]
                event["audio"] = {"sample_rate": rate, "seconds": len(audio) / 2 / rate}
                return event, pcm_to_wav(bytes(audio), rate)


def show(report: dict[str, Any], wav_path: Path, question: Path) -> None:
    t = report["timings"]
    stages = [
        ("stt", t.get("stt_ms")),
        ("llm first token", t.get("llm_first_token_ms")),
        ("llm", t.get("llm_ms")),
        ("tts", t.get("tts_ms")),
        ("first audio", t.get("first_audio_ms")),
        ("total", t.get("total_ms")),
    ]
    providers = ", ".join(f"{s} {p['provider']}" for s, p in report["providers"].items())
    print(f"question    {question}")
    print(f"transcript  {report['transcript']}")
    print(f"reply       {report['reply']}")
    print(
        f"reply WAV   {wav_path} ({report['audio']['seconds']:.1f} s, "
        f"{report['audio']['sample_rate']} Hz)"
    )
    print("timings     " + " | ".join(f"{name} {v:.0f} ms" for name, v in stages if v is not None))
    print(f"providers   {providers}")


def stt_backend(requested: str) -> str:
    """whisper.cpp needs the bundled model converted to ggml once (then cached); where
    the converter cannot run, faster-whisper serves the original instead."""
    if requested == "whispercpp":
        try:
            whisper_env("whispercpp")
        except ImportError as exc:
            print(
                f"voice-demo: converting the model for whisper.cpp needs {exc.name}; "
                "using faster-whisper instead",
                file=sys.stderr,
            )
            return "faster-whisper"
    return requested


def _raise_on_sigterm(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.wav.is_file():
        print(f"voice-demo: {args.wav} does not exist (give one with --wav)", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="voice-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so the finally below stops the children either way.
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    options = StackOptions(stt_backend=stt_backend(args.stt), threads=args.threads)
    stack = LocalStack(options, work_dir=out)
    print(f"voice-demo: starting the STT, LLM and TTS engines and the gateway (logs in {out}/logs)")
    try:
        stack.start(lambda name, s: print(f"  {name:<8} ready after {s:.1f} s", flush=True))
        pids = ", ".join(f"{n} {p.pid}" for n, p in stack.processes.items())
        print(f"  gateway  {stack.gateway.url} (pids: {pids})", flush=True)
        wav = args.wav.read_bytes()
        if args.stream:
            report, reply_wav = asyncio.run(_turn_over_ws(stack.gateway.url, wav))
        else:
            report, reply_wav = turn_over_http(stack.gateway.url, wav)
        wav_path = out / "reply.wav"
        wav_path.write_bytes(reply_wav)
        show(report, wav_path, args.wav)
        if args.keep_running:
            print(f"running: POST {stack.gateway.url}/v1/turn, ws {stack.gateway.url}/v1/stream")
            print("Ctrl-C stops everything")
            while all(p.alive() for p in stack.processes.values()):
                time.sleep(1)
            print("voice-demo: a process exited; stopping the rest", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        print("\nvoice-demo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"voice-demo: {exc}", file=sys.stderr)
        return 1
    finally:
        stopped = stack.stop()
        if stopped:
            print(f"stopped     {', '.join(stopped)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
