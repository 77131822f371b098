"""Each engine on the CPU and on a CUDA device, in the same run: median request time and
the speedup. Run by scripts/gpu-check.sh on a machine with an NVIDIA GPU and the CUDA
builds of the engines' libraries (see engines/Dockerfile, VARIANT=cuda).

    .venv/bin/python benchmarks/gpu.py [--repeats 5]

The engines start as in a pod (env vars), once with the device setting `cpu` and once with
`cuda`; `cuda` without a usable GPU fails the model's load, so a run that prints a speedup
ran on the GPU. Piper has no device setting (onnxruntime on the CPU) and is left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import httpx
from _engines_servers import CT2_WHISPER, SMOLLM2, engine

from engines import speech_wav

PROMPT = [{"role": "user", "content": "Describe a quiet morning by a lake in a paragraph."}]


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm: first CUDA calls compile kernels and allocate
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def transcribe(url: str, wav: bytes) -> Callable[[], object]:
    def call() -> object:
        answer = httpx.post(f"{url}/transcribe", files={"file": ("q.wav", wav)}, timeout=300)
        answer.raise_for_status()
        return answer.json()

    return call


def chat(url: str) -> Callable[[], object]:
    def call() -> object:
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": PROMPT, "max_tokens": 128, "temperature": 0},
            timeout=300,
        )
        answer.raise_for_status()
        return answer.json()

    return call


def gpu_libraries() -> dict[str, bool]:
    """Which of the engines' libraries can use a CUDA device here."""
    import _pywhispercpp
    import ctranslate2
    import llama_cpp

    from voice_engines.stt.backends.whispercpp import whispercpp_has_cuda

    return {
        "stt faster-whisper": ctranslate2.get_cuda_device_count() > 0,
        "stt whisper.cpp": whispercpp_has_cuda(_pywhispercpp.whisper_print_system_info()),
        "llm llama.cpp": bool(llama_cpp.llama_supports_gpu_offload()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from voice_engines.convert.cache import cached_ggml

    usable = gpu_libraries()
    if not any(usable.values()):
        # `make bench` runs every benchmark: on a machine without a GPU this one is moot.
        print("no engine library here can use a CUDA device: nothing to compare")
        return 0

    wav, _, seconds = speech_wav()
    cases = [
        (
            "stt faster-whisper",
            "stt",
            {"STT_BACKEND": "faster-whisper", "STT_MODEL_PATH": str(CT2_WHISPER)},
            "STT_DEVICE",
            lambda url: transcribe(url, wav),
        ),
        (
            "stt whisper.cpp",
            "stt",
            {"STT_BACKEND": "whispercpp", "STT_MODEL_PATH": str(cached_ggml(CT2_WHISPER))},
            "STT_DEVICE",
            lambda url: transcribe(url, wav),
        ),
        (
            "llm llama.cpp",
            "llm",
            {"LLM_BACKEND": "llamacpp", "LLM_MODEL_PATH": str(SMOLLM2), "LLM_TEMPERATURE": "0"},
            "LLM_DEVICE",
            chat,
        ),
    ]
    print(f"speech: {seconds:.1f} s; median of {args.repeats} after one warm-up")
    print(f"{'engine':20} {'cpu s':>8} {'cuda s':>8} {'speedup':>8}")
    failed = False
    for label, name, env, setting, make in cases:
        if not usable[label]:
            print(f"{label:20} no CUDA in this build or no device: skipped")
            failed = True
            continue
        times = {}
        for device in ("cpu", "cuda"):
            try:
                with engine(name, {**env, setting: device}) as url:
                    times[device] = median_seconds(make(url), args.repeats)
            except (RuntimeError, TimeoutError) as exc:
                print(f"{label:20} {device}: did not start ({exc}); see its /ready")
                failed = True
        if len(times) == 2:
            speedup = times["cpu"] / times["cuda"]
            print(f"{label:20} {times['cpu']:8.3f} {times['cuda']:8.3f} {speedup:7.1f}x")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
