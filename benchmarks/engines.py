"""Engine benchmark: every engine's HTTP round trip against the raw library call it wraps,
measured in the same run on the same machine and threads (goal: ratio <= 1.05), plus STT
real-time factor per backend, TTS time to first audio byte streamed vs not, and LLM
tokens per second through llama.cpp and through a real Ollama.

    .venv/bin/python benchmarks/engines.py [--repeats N] [--skip-ollama] [--only stt|tts|llm]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _engines_servers import (
    CT2_WHISPER,
    PIPER_VOICE,
    SMOLLM2,
    engine,
    ollama_serving,
)

THREADS = 2
SPEECH = (
    "Good afternoon, thank you for calling. I can help you change your booking today. "
    "Please tell me the name on the reservation and the date you would like to travel. "
    "If you prefer, I can also send the details to your email address."
)
SYSTEM = "You are a helpful voice assistant. Answer in one or two short sentences."
PROMPT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Write a short story about a robot who learns to paint."},
]
MAX_TOKENS = 64
SETTLE_S = 0.5

Row = dict[str, str]


class Pair:
    """Timings of the raw call and the HTTP round trip, taken alternately."""

    def __init__(self, raw: list[float], http: list[float]) -> None:
        self.raw, self.http = statistics.median(raw), statistics.median(http)
        # On a shared 2-core machine other processes' bursts land on random samples; the
        # fastest of each side is the least disturbed view of the overhead.
        self.raw_best, self.http_best = min(raw), min(http)


def paired(raw: Callable[[], object], http: Callable[[], object], repeats: int) -> Pair:
    raw(), http()  # warm-up
    raw_times, http_times = [], []
    for _ in range(repeats):
        for fn, times in ((raw, raw_times), (http, http_times)):
            # onnxruntime and OpenMP workers spin for a while after each call; let the
            # other side's go idle so neither measurement pays for the other's.
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return Pair(raw_times, http_times)


def row(name: str, pair: Pair, note: str) -> Row:
    return {
        "engine": name,
        "raw library (s)": f"{pair.raw:.3f}",
        "HTTP (s)": f"{pair.http:.3f}",
        "ratio": f"{pair.http / pair.raw:.3f}",
        "ratio of best": f"{pair.http_best / pair.raw_best:.3f}",
        "notes": note,
    }


def speech_wav() -> tuple[bytes, np.ndarray, float]:
    """Piper reads SPEECH once; returns the WAV a client would upload, the 16 kHz mono
    array the STT libraries take, and its duration."""
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(PIPER_VOICE)
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(SPEECH, steady)])
    rate = voice.config.sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    wav = buffer.getvalue()
    # The raw call gets exactly the samples the service decodes from the upload.
    decoded, _ = sf.read(io.BytesIO(wav), dtype="float32")
    return wav, soxr.resample(decoded, rate, 16000).astype(np.float32), len(audio) / rate


def bench_stt(repeats: int) -> list[Row]:
    from faster_whisper import WhisperModel
    from pywhispercpp.model import Model

    from voice_engines.convert.cache import cached_ggml

    wav, audio16k, seconds = speech_wav()
    ggml = cached_ggml(CT2_WHISPER)
    rows = []
    backends: list[tuple[str, dict[str, str], Callable[[], object]]] = []
    wcpp = Model(
        str(ggml),
        n_threads=THREADS,
        redirect_whispercpp_logs_to=None,
        print_progress=False,
        print_realtime=False,
    )
    backends.append(
        (
            "whispercpp",
            {"STT_MODEL_PATH": str(ggml)},
            lambda: wcpp.transcribe(audio16k, language="en", temperature=0.0),
        )
    )
    fw = WhisperModel(str(CT2_WHISPER), device="cpu", cpu_threads=THREADS)
    backends.append(
        (
            "faster-whisper",
            {"STT_MODEL_PATH": str(CT2_WHISPER)},
            lambda: list(
                fw.transcribe(
                    audio16k, language="en", beam_size=1, temperature=0.0, vad_filter=False
                )[0]
            ),
        )
    )
    for name, env, raw in backends:
        settings = {"STT_BACKEND": name, "STT_THREADS": str(THREADS), **env}
        with engine("stt", settings) as url, httpx.Client(timeout=120) as client:

            def http(client: httpx.Client = client, url: str = url) -> object:
                response = client.post(f"{url}/transcribe", files={"file": ("a.wav", wav)})
                response.raise_for_status()
                return response

            pair = paired(raw, http, repeats)
        rows.append(
            row(
                f"stt {name}",
                pair,
                f"{seconds:.1f} s audio; real-time factor raw {pair.raw / seconds:.3f}, "
                f"HTTP {pair.http / seconds:.3f}",
            )
        )
    return rows


def first_byte_seconds(client: httpx.Client, url: str, body: dict) -> float:
    started = time.perf_counter()
    with client.stream("POST", f"{url}/synthesize", json=body) as response:
        response.raise_for_status()
        first = None
        for _ in response.iter_raw():
            first = first or time.perf_counter() - started
    assert first is not None
    return first


def bench_tts(repeats: int) -> list[Row]:
    from piper import PiperVoice

    voice = PiperVoice.load(PIPER_VOICE)

    def raw() -> object:
        return np.concatenate([c.audio_float_array for c in voice.synthesize(SPEECH)])

    with (
        engine("tts", {"TTS_VOICE_PATH": str(PIPER_VOICE)}) as url,
        httpx.Client(timeout=120) as client,
    ):

        def http() -> object:
            response = client.post(f"{url}/synthesize", json={"text": SPEECH})
            response.raise_for_status()
            return response

        pair = paired(raw, http, repeats)
        ttfb = {}
        for stream in (False, True):
            body = {"text": SPEECH, "stream": stream}
            first_byte_seconds(client, url, body)
            ttfb[stream] = statistics.median(
                first_byte_seconds(client, url, body) for _ in range(repeats)
            )
    return [
        row(
            "tts piper",
            pair,
            f"first audio byte: streamed {ttfb[True]:.3f} s, whole {ttfb[False]:.3f} s",
        )
    ]


def chat_http(client: httpx.Client, url: str) -> Callable[[], dict]:
    def call() -> dict:
        response = client.post(
            f"{url}/v1/chat/completions",
            json={"messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0},
        )
        response.raise_for_status()
        return response.json()

    return call


def bench_llm(repeats: int, with_ollama: bool) -> list[Row]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(SMOLLM2), n_ctx=2048, n_threads=THREADS, verbose=False)
    produced: dict[str, int] = {}

    def raw_llamacpp() -> object:
        result = llm.create_chat_completion(messages=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
        produced["llamacpp"] = result["usage"]["completion_tokens"]
        return result

    rows = []
    env = {"LLM_MODEL_PATH": str(SMOLLM2), "LLM_THREADS": str(THREADS), "LLM_BACKEND": "llamacpp"}
    with engine("llm", env) as url, httpx.Client(timeout=300) as client:
        pair = paired(raw_llamacpp, chat_http(client, url), repeats)
    tokens = produced["llamacpp"]
    rows.append(
        row(
            "llm llama.cpp",
            pair,
            tokens_note(tokens, pair),
        )
    )
    llm.close()
    if not with_ollama:
        return rows
    import ollama

    model = "smollm2-bench"
    with ollama_serving(SMOLLM2, model) as ollama_url:
        direct = ollama.Client(host=ollama_url, timeout=300)

        def raw_ollama() -> object:
            result = direct.chat(
                model=model,
                messages=PROMPT,
                options={"num_predict": MAX_TOKENS, "temperature": 0, "num_ctx": 2048},
                keep_alive="24h",
            )
            produced["ollama"] = result.eval_count or 0
            return result

        env = {"LLM_BACKEND": "ollama", "OLLAMA_BASE_URL": ollama_url, "LLM_MODEL": model}
        with engine("llm", env) as url, httpx.Client(timeout=300) as client:
            pair = paired(raw_ollama, chat_http(client, url), repeats)
    tokens = produced["ollama"]
    rows.append(
        row(
            "llm ollama",
            pair,
            tokens_note(tokens, pair),
        )
    )
    return rows


def tokens_note(tokens: int, pair: Pair) -> str:
    return (
        f"{tokens} tokens; {tokens / pair.raw:.0f} tok/s raw, {tokens / pair.http:.0f} tok/s HTTP"
    )


def print_table(rows: list[Row]) -> None:
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line([r[h] for h in headers]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-ollama", action="store_true", help="skip building/serving Ollama")
    parser.add_argument("--only", choices=["stt", "tts", "llm"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["stt", "tts", "llm"])
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rows = bench_stt(args.repeats) if "stt" in only else []
    rows += bench_tts(args.repeats) if "tts" in only else []
    if "llm" in only:
        rows += bench_llm(args.repeats, with_ollama=not args.skip_ollama)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
