"""An engine told to run on CUDA where there is none does not fall back to the CPU
quietly: its model fails to load, /ready says why naming the setting, and the operator's
rollout sees a revision that never becomes ready. Real engine processes, real models."""

from __future__ import annotations

import time

import httpx
import pytest
from enginekit import EngineProcess, ct2_whisper, smollm2_gguf

pytestmark = pytest.mark.engines


def failed_load(server: EngineProcess, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{server.url}/ready", timeout=5)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        error = answer.json().get("error", {})
        if error.get("code") == "model_failed":
            assert answer.status_code == 503
            return error
        time.sleep(0.2)
    raise AssertionError(f"no model_failed within {timeout_s} s:\n{server.log_tail()}")


@pytest.mark.parametrize(
    ("engine", "env", "setting"),
    [
        (
            "stt",
            {"STT_BACKEND": "faster-whisper", "STT_MODEL_PATH": str(ct2_whisper())},
            "STT_DEVICE",
        ),
        ("llm", {"LLM_BACKEND": "llamacpp", "LLM_MODEL_PATH": str(smollm2_gguf())}, "LLM_DEVICE"),
    ],
    ids=["faster-whisper", "llama.cpp"],
)
def test_cuda_asked_for_without_a_gpu_fails_the_load_naming_the_setting(engine, env, setting):
    server = EngineProcess(engine, {**env, setting: "cuda"})
    try:
        error = failed_load(server)
    finally:
        server.stop()
    assert f"{setting}=cuda, but no CUDA device is usable" in error["message"]
