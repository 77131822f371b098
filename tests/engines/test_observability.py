"""Metrics under the seed's exact names, JSON logs, and correlation ids."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from enginekit import EngineProcess, Spoken, piper_voice

pytestmark = pytest.mark.engines

STT_METRICS = [
    "stt_transcription_requests_total",
    "stt_transcription_errors_total",
    "stt_transcription_duration_seconds",
    "stt_audio_duration_seconds",
]
TTS_METRICS = [
    "tts_synthesis_requests_total",
    "tts_synthesis_errors_total",
    "tts_synthesis_duration_seconds",
    "tts_text_length_chars",
]
LLM_METRICS = [
    "llm_generation_requests_total",
    "llm_generation_errors_total",
    "llm_generation_duration_seconds",
    "llm_input_tokens",
    "llm_output_tokens",
]


def metric_families(server: EngineProcess) -> set[str]:
    text = httpx.get(f"{server.url}/metrics").text
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))


def sample(server: EngineProcess, line_start: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def load(server: EngineProcess, engine: str) -> tuple[float, float]:
    """(requests in flight, requests queued) from one scrape."""
    values = dict.fromkeys(("voice_engine_requests_in_flight", "voice_engine_queue_depth"), -1.0)
    # Generous: the engine answers scrapes between tokens, on a machine others share.
    for line in httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        name, _, rest = line.partition("{")
        if name in values and rest.startswith(f'engine="{engine}"}}'):
            values[name] = float(line.rsplit(" ", 1)[1])
    return values["voice_engine_requests_in_flight"], values["voice_engine_queue_depth"]


def test_stt_metrics(stt_whispercpp: EngineProcess, spoken: list[Spoken]) -> None:
    httpx.post(f"{stt_whispercpp.url}/transcribe", files={"file": ("a.wav", spoken[0].wav)})
    httpx.post(f"{stt_whispercpp.url}/transcribe", files={"file": ("a.wav", b"junk")})
    families = metric_families(stt_whispercpp)
    assert set(STT_METRICS) <= families
    assert (
        sample(
            stt_whispercpp, 'stt_transcription_errors_total{endpoint="/transcribe",status="415"}'
        )
        >= 1
    )
    assert sample(stt_whispercpp, "stt_audio_duration_seconds_count") >= 1


def test_tts_metrics(tts: EngineProcess) -> None:
    httpx.post(f"{tts.url}/synthesize", json={"text": "Counting."})
    families = metric_families(tts)
    assert set(TTS_METRICS) <= families
    assert load(tts, "tts") == (0, 0)
    assert sample(tts, "tts_text_length_chars_sum") >= len("Counting.")


def test_llm_metrics(llm_llamacpp: EngineProcess) -> None:
    httpx.post(f"{llm_llamacpp.url}/generate", json={"prompt": "Hi", "max_tokens": 3}, timeout=60)
    families = metric_families(llm_llamacpp)
    assert set(LLM_METRICS) <= families
    assert sample(llm_llamacpp, "llm_output_tokens_count") >= 1
    assert sample(llm_llamacpp, 'llm_generation_requests_total{endpoint="/generate"}') >= 1


def test_llm_exports_work_in_flight_and_queued_for_autoscaling(
    llm_llamacpp: EngineProcess,
) -> None:
    assert load(llm_llamacpp, "llm") == (0, 0)
    body = {"prompt": "Count from one to one hundred in words.", "max_tokens": 200}
    seen: list[tuple[float, float]] = []
    with ThreadPoolExecutor(3) as pool:
        turns = [
            pool.submit(httpx.post, f"{llm_llamacpp.url}/generate", json=body, timeout=120)
            for _ in range(3)
        ]
        while not all(t.done() for t in turns):
            seen.append(load(llm_llamacpp, "llm"))
            time.sleep(0.05)
        assert [t.result().status_code for t in turns] == [200, 200, 200]
    # llama.cpp decodes one request at a time: three admitted at once, two of them queued.
    assert (3, 2) in seen
    assert load(llm_llamacpp, "llm") == (0, 0)


def test_json_logs_carry_the_correlation_id() -> None:
    server = EngineProcess("tts", {"TTS_VOICE_PATH": str(piper_voice()), "LOG_LEVEL": "INFO"})
    try:
        server.wait_ready()
        given = httpx.post(
            f"{server.url}/synthesize", json={"text": ""}, headers={"X-Request-ID": "call-42.a"}
        )
        assert given.headers["x-request-id"] == "call-42.a"
        assert given.json()["error"]["correlation_id"] == "call-42.a"
        made = httpx.post(f"{server.url}/synthesize", json={"text": "Hi."})
        made_id = made.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made_id)
        # A caller's id that could forge log lines is replaced, not echoed.
        forged = httpx.post(
            f"{server.url}/synthesize", json={"text": "Hi."}, headers={"X-Request-ID": "a b\tc"}
        )
        assert forged.headers["x-request-id"] != "a b\tc"
        lines = Path(server.log.name).read_text().splitlines()
    finally:
        server.stop()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(records) == len([ln for ln in lines if ln.strip()])  # every line is JSON
    access = [r for r in records if r["logger"] == "voice_engines.access"]
    by_id = {r["correlation_id"]: r for r in access}
    assert by_id["call-42.a"]["status"] == 400
    assert by_id[made_id]["status"] == 200
    assert by_id[made_id]["path"] == "/synthesize"
    assert {"time", "level", "message"} <= by_id[made_id].keys()
    # RFC 3339, UTC, milliseconds: 2026-12-02T07:20:01.123Z
    for r in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]), r
