"""Overload benchmark: many clients at once on whisper.cpp (one worker), each sending the
same spoken sentence; how each was answered and after how long. Before admission by
expected wait, clients deep in the queue waited the whole queue timeout for a 503; now a
request whose expected wait (requests ahead x recent service time) exceeds the timeout
gets 429 at once. Reported as shares of the clients and as each answer's wait against the
queue timeout (a ratio: 1.0 = waited the whole timeout).

    .venv/bin/python benchmarks/overload.py [--clients 64] [--queue-timeout 60]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _engines_servers import CT2_WHISPER, PIPER_VOICE, engine

SENTENCE = "Please book a table for four people at seven tonight."


def spoken_wav() -> bytes:
    from piper import PiperVoice

    voice = PiperVoice.load(PIPER_VOICE)
    audio = [c.audio_float_array for c in voice.synthesize(SENTENCE)]
    buffer = io.BytesIO()
    sf.write(buffer, np.concatenate(audio), voice.config.sample_rate, format="WAV")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--queue-timeout", type=float, default=60.0)
    args = parser.parse_args()
    from voice_engines.convert.cache import cached_ggml

    wav = spoken_wav()
    env = {
        "STT_BACKEND": "whispercpp",
        "STT_MODEL_PATH": str(cached_ggml(CT2_WHISPER)),
        "STT_THREADS": "2",
        "ENGINE_QUEUE_TIMEOUT": str(args.queue_timeout),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    with engine("stt", env) as url:
        # Two calls first, so the engine has measured its service time, as a serving one has.
        for _ in range(2):
            httpx.post(f"{url}/transcribe", files={"file": ("a.wav", wav)}, timeout=600)

        def one(_: int) -> tuple[int, float]:
            started = time.perf_counter()
            response = httpx.post(f"{url}/transcribe", files={"file": ("a.wav", wav)}, timeout=600)
            return response.status_code, time.perf_counter() - started

        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(one, range(args.clients)))
    print(f"{args.clients} clients, queue timeout {args.queue_timeout:g} s, whisper.cpp, 1 worker")
    for status in sorted({s for s, _ in results}):
        waits = [w / args.queue_timeout for s, w in results if s == status]
        print(
            f"  {status}: {len(waits)} clients ({len(waits) / len(results):.0%}); wait / queue "
            f"timeout median {statistics.median(waits):.3f}, max {max(waits):.3f}"
        )
    full = sum(1 for s, w in results if s == 503 and w >= 0.95 * args.queue_timeout)
    print(f"  answered only after waiting the whole queue timeout: {full}")


if __name__ == "__main__":
    main()
