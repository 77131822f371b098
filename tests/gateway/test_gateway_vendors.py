"""The gateway process against local servers that speak Deepgram's, OpenAI's (and
Groq's) and ElevenLabs' documented wire formats over real HTTP: what each adapter sends,
how each failure is answered (401, 429 with Retry-After, 5xx, timeouts), retries only
where a repeat is harmless, fallback, the circuit breaker, missing keys, bad input, the
WebSocket protocol, routes reload, and keys never in a log line."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from fakevendors import Deepgram, ElevenLabs, OpenAI, ThreadServer
from gatewaykit import Gateway, turn
from websockets.sync.client import connect

ENV_KEY = "dg-env-" + uuid.uuid4().hex
USED_KEYS: list[str] = [ENV_KEY]
TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    """One gateway for the module; each test writes the routes it needs (new revisions,
    so every test starts with closed circuits)."""
    gw = Gateway(
        env={
            "GATEWAY_STT_TIMEOUT": str(TIMEOUT_S),
            "GATEWAY_LLM_TIMEOUT": str(TIMEOUT_S),
            "GATEWAY_TTS_TIMEOUT": str(TIMEOUT_S),
            "GATEWAY_RETRIES": "1",
            "GATEWAY_RETRY_MAX_WAIT": "2",
            "GATEWAY_BREAKER_FAILURES": "3",
            "GATEWAY_BREAKER_RESET_SECONDS": "60",
            "GATEWAY_HISTORY_TURNS": "2",
            "GATEWAY_MAX_BODY_BYTES": str(2 * 1024 * 1024),
            "GATEWAY_MAX_AUDIO_SECONDS": "10",
            "DEEPGRAM_TEST_KEY": ENV_KEY,
        }
    ).wait_alive()
    yield gw
    gw.stop()


class World:
    """Fresh keys for the fake vendors, their files, and routes built on them."""

    def __init__(
        self,
        tmp: Path,
        deepgram: tuple[Deepgram, ThreadServer],
        openai: tuple[OpenAI, ThreadServer],
        groq: tuple[OpenAI, ThreadServer],
        elevenlabs: tuple[ElevenLabs, ThreadServer],
    ) -> None:
        self.deepgram, self.deepgram_url = deepgram[0], deepgram[1].url
        self.openai, self.openai_url = openai[0], openai[1].url
        self.groq, self.groq_url = groq[0], groq[1].url
        self.elevenlabs, self.elevenlabs_url = elevenlabs[0], elevenlabs[1].url
        self.keys: dict[str, Path] = {}
        for name, vendor in (
            ("deepgram", self.deepgram),
            ("openai", self.openai),
            ("groq", self.groq),
            ("elevenlabs", self.elevenlabs),
        ):
            key = f"{name}-{uuid.uuid4().hex}"
            USED_KEYS.append(key)
            vendor.reset(key)
            self.keys[name] = tmp / name / "api-key"
            self.keys[name].parent.mkdir()
            self.keys[name].write_text(key + "\n")
        self.revision = uuid.uuid4().hex[:10]

    def key(self, vendor: str) -> str:
        return self.keys[vendor].read_text().strip()

    def stage(self, stage: str, vendor: str, **extra: Any) -> dict[str, Any]:
        urls = {
            ("stt", "deepgram"): self.deepgram_url,
            ("stt", "openai"): f"{self.openai_url}/v1",
            ("llm", "openai"): f"{self.openai_url}/v1",
            ("llm", "groq"): f"{self.groq_url}/openai/v1",
            ("tts", "elevenlabs"): self.elevenlabs_url,
            ("tts", "openai"): f"{self.openai_url}/v1",
        }
        settings = {
            "stt": {"temperature": 0, "language": "en"},
            "llm": {"maxTokens": 50, "temperature": 0.2, "systemPrompt": "Be brief."},
            "tts": {"speed": 1},
        }[stage]
        return {
            "provider": "external",
            "vendor": vendor,
            "model": None,
            "url": urls[(stage, vendor)],
            "voice": None,
            "apiKeyFile": str(self.keys[vendor]),
            "revision": f"{stage}-{vendor}-{self.revision}",
            "settings": settings,
            **extra,
        }

    def routes(self, stt: Any = "deepgram", llm: Any = "openai", tts: Any = "elevenlabs") -> dict:
        def one(stage: str, value: Any) -> Any:
            return self.stage(stage, value) if isinstance(value, str) else value

        return {
            "agent": "test",
            "namespace": "test",
            "stages": {"stt": one("stt", stt), "llm": one("llm", llm), "tts": one("tts", tts)},
        }


@pytest.fixture
def world(
    tmp_path: Path,
    deepgram: tuple[Deepgram, ThreadServer],
    openai: tuple[OpenAI, ThreadServer],
    groq: tuple[OpenAI, ThreadServer],
    elevenlabs: tuple[ElevenLabs, ThreadServer],
) -> World:
    return World(tmp_path, deepgram, openai, groq, elevenlabs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "field", "correlation_id"}
    return body["error"]


def wav_of(body: dict[str, Any]) -> tuple[np.ndarray, int]:
    import base64

    samples, rate = sf.read(io.BytesIO(base64.b64decode(body["audio"]["base64"])))
    return samples, rate


def test_without_routes_the_gateway_is_alive_but_not_ready(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    assert httpx.get(f"{gateway.url}/health").status_code == 200
    ready = httpx.get(f"{gateway.url}/ready")
    assert ready.status_code == 503 and error_of(ready)["code"] == "no_routes"
    assert error_of(turn(gateway.url, question_wav))["code"] == "no_routes"
    gateway.apply(world.routes())
    assert httpx.get(f"{gateway.url}/ready").status_code == 200


def test_a_stage_without_a_route_keeps_the_gateway_not_ready(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    """As on a first install: the routes file names no provider for STT until its engine
    is available, and the gateway stays out of its Service until it can serve a turn."""
    routes = world.routes()
    routes["stages"]["stt"] = None
    gateway.apply(routes)
    ready = httpx.get(f"{gateway.url}/ready")
    assert ready.status_code == 503
    error = error_of(ready)
    assert error["code"] == "stage_unrouted" and "stt" in error["message"], error
    gateway.apply(world.routes())
    assert httpx.get(f"{gateway.url}/ready").status_code == 200
    assert turn(gateway.url, question_wav).status_code == 200


def test_deepgram_openai_elevenlabs_wire_format(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    gateway.apply(world.routes(stt="deepgram", llm="openai", tts="elevenlabs"))
    response = turn(gateway.url, question_wav, sample_rate="22050")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transcript"] == Deepgram.transcript
    assert body["reply"] == OpenAI.reply
    assert {s: p["provider"] for s, p in body["providers"].items()} == {
        "stt": "deepgram",
        "llm": "openai",
        "tts": "elevenlabs",
    }
    samples, rate = wav_of(body)
    assert rate == 22050 and len(samples) == pytest.approx(0.05 * len(OpenAI.reply) * rate, abs=8)
    assert body["usage"]["llm_output_tokens"] == len(OpenAI.reply.split())
    assert body["usage"]["llm_input_tokens"] == 20

    (listen,) = world.deepgram.calls("/v1/listen")
    assert listen.method == "POST"
    assert listen.headers["authorization"] == f"Token {world.key('deepgram')}"
    assert listen.headers["content-type"] == "audio/wav"
    assert listen.query == {"model": "nova-3", "smart_format": "true", "language": "en"}
    audio, audio_rate = sf.read(io.BytesIO(listen.body))
    assert audio_rate == 16000 and audio.ndim == 1

    (chat,) = world.openai.calls("/v1/chat/completions")
    assert chat.path == "/v1/chat/completions"
    assert chat.headers["authorization"] == f"Bearer {world.key('openai')}"
    request = chat.json()
    assert request["model"] == "gpt-4o-mini"
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert request["max_tokens"] == 50 and request["temperature"] == 0.2
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": Deepgram.transcript},
    ]

    (speech,) = world.elevenlabs.calls("/v1/text-to-speech/")
    assert speech.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream"
    assert speech.query == {"output_format": "pcm_22050"}
    assert speech.headers["xi-api-key"] == world.key("elevenlabs")
    assert "authorization" not in speech.headers
    assert speech.json() == {"text": OpenAI.reply, "model_id": "eleven_flash_v2_5"}


def test_openai_transcription_groq_chat_openai_speech_wire_format(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    routes = world.routes(stt="openai", llm="groq", tts="openai")
    routes["stages"]["llm"]["model"] = "llama-3.1-8b-instant"
    routes["stages"]["tts"]["voice"] = "nova"
    gateway.apply(routes)
    response = turn(gateway.url, question_wav)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transcript"] == OpenAI.transcript
    samples, rate = wav_of(body)
    # 24 kHz PCM from the vendor, resampled to the gateway's 22.05 kHz.
    assert rate == 22050
    assert len(samples) == pytest.approx(0.05 * len(OpenAI.reply) * 22050, rel=0.01)

    key = world.key("openai")
    (transcription,) = world.openai.calls("/v1/audio/transcriptions")
    assert transcription.headers["authorization"] == f"Bearer {key}"
    assert transcription.form["model"] == "whisper-1"
    assert transcription.form["response_format"] == "json"
    assert transcription.form["language"] == "en"
    assert transcription.form["file"]["filename"] == "audio.wav"

    (chat,) = world.groq.calls("/openai/v1/chat/completions")
    assert chat.headers["authorization"] == f"Bearer {world.key('groq')}"
    assert chat.path == "/openai/v1/chat/completions"  # Groq's OpenAI-compatible base
    assert chat.json()["model"] == "llama-3.1-8b-instant"

    (speech,) = world.openai.calls("/v1/audio/speech")
    assert speech.json() == {
        "model": "tts-1",
        "input": OpenAI.reply,
        "voice": "nova",
        "response_format": "pcm",
        "speed": 1,
    }


# (stage, vendor, the request path its calls start with, idempotent)
ADAPTERS = [
    ("stt", "deepgram", "/v1/listen", True),
    ("stt", "openai", "/v1/audio/transcriptions", True),
    ("llm", "openai", "/v1/chat/completions", False),
    ("llm", "groq", "/openai/v1/chat/completions", False),
    ("tts", "elevenlabs", "/v1/text-to-speech/", True),
    ("tts", "openai", "/v1/audio/speech", True),
]
ADAPTER_PATHS = [(stage, vendor, path) for stage, vendor, path, _ in ADAPTERS]


def routes_testing(world: World, stage: str, vendor: str) -> dict[str, Any]:
    """The adapter under test on its stage; the other stages on vendors whose requests
    are told apart by path."""
    chosen = {"stt": "deepgram", "llm": "groq", "tts": "elevenlabs"}
    chosen[stage] = vendor
    return world.routes(**chosen)


def fake(world: World, vendor: str) -> Any:
    return {
        "deepgram": world.deepgram,
        "elevenlabs": world.elevenlabs,
        "groq": world.groq,
        "openai": world.openai,
    }[vendor]


@pytest.mark.parametrize(("stage", "vendor", "path"), ADAPTER_PATHS)
def test_401_is_an_auth_failure_and_not_retried(
    gateway: Gateway,
    world: World,
    question_wav: bytes,
    stage: str,
    vendor: str,
    path: str,
) -> None:
    gateway.apply(routes_testing(world, stage, vendor))
    server = fake(world, vendor)
    server.reset("a-different-key")
    response = turn(gateway.url, question_wav)
    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "upstream_auth_failed"
    assert f"{stage} via {vendor}" in error["message"] and "401" in error["message"]
    assert len(server.calls(path)) == 1
    assert world.key(vendor) not in response.text
    if vendor in ("openai", "groq"):
        # OpenAI's 401 names the key it was given: scrubbed before it reaches the client.
        assert "[redacted]" in error["message"]


@pytest.mark.parametrize(("stage", "vendor", "path"), ADAPTER_PATHS)
def test_429_with_a_short_retry_after_is_waited_for_and_retried(
    gateway: Gateway,
    world: World,
    question_wav: bytes,
    stage: str,
    vendor: str,
    path: str,
) -> None:
    gateway.apply(routes_testing(world, stage, vendor))
    server = fake(world, vendor)
    server.script("429:1", only=path)
    response = turn(gateway.url, question_wav)
    assert response.status_code == 200, response.text
    first, second = server.calls(path)
    assert second.at - first.at >= 0.9  # Retry-After: 1 was honoured


@pytest.mark.parametrize(("stage", "vendor", "path"), ADAPTER_PATHS)
def test_429_with_a_long_retry_after_is_passed_on(
    gateway: Gateway,
    world: World,
    question_wav: bytes,
    stage: str,
    vendor: str,
    path: str,
) -> None:
    gateway.apply(routes_testing(world, stage, vendor))
    server = fake(world, vendor)
    server.script("429:30", only=path)
    response = turn(gateway.url, question_wav)
    assert response.status_code == 503
    assert error_of(response)["code"] == "upstream_rate_limited"
    assert response.headers["retry-after"] == "30"
    assert len(server.calls(path)) == 1


@pytest.mark.parametrize(("stage", "vendor", "path", "idempotent"), ADAPTERS)
def test_5xx_is_retried_only_where_a_repeat_is_harmless(
    gateway: Gateway,
    world: World,
    question_wav: bytes,
    stage: str,
    vendor: str,
    path: str,
    idempotent: bool,
) -> None:
    gateway.apply(routes_testing(world, stage, vendor))
    server = fake(world, vendor)
    server.script("500", "500", "500", only=path)
    response = turn(gateway.url, question_wav)
    assert response.status_code == 503
    assert error_of(response)["code"] == "upstream_unavailable"
    # GATEWAY_RETRIES=1: speech in and out are tried twice; a completion only once.
    assert len(server.calls(path)) == (2 if idempotent else 1)


@pytest.mark.parametrize(("stage", "vendor", "path"), ADAPTER_PATHS)
def test_a_provider_slower_than_the_stage_timeout_times_out(
    gateway: Gateway,
    world: World,
    question_wav: bytes,
    stage: str,
    vendor: str,
    path: str,
) -> None:
    gateway.apply(routes_testing(world, stage, vendor))
    server = fake(world, vendor)
    server.script("slow:4", "slow:4", only=path)
    response = turn(gateway.url, question_wav)
    assert response.status_code == 504
    error = error_of(response)
    assert error["code"] == "upstream_timeout" and stage in error["message"]


def test_internal_stt_down_falls_back_to_deepgram(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    from voice_engines.demo.stack import free_port

    down = {
        "provider": "internal",
        "url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "revision": f"stt-internal-{world.revision}",
        "model": "whisper",
        "settings": {"language": "en"},
        "fallback": world.stage("stt", "deepgram"),
    }
    gateway.apply(world.routes(stt=down))
    before = gateway.metric(
        "gateway_fallbacks_total", stage="stt", provider="internal", fallback="deepgram"
    )
    response = turn(gateway.url, question_wav)
    assert response.status_code == 200, response.text
    assert response.json()["providers"]["stt"]["provider"] == "deepgram"
    assert response.json()["transcript"] == Deepgram.transcript
    after = gateway.metric(
        "gateway_fallbacks_total", stage="stt", provider="internal", fallback="deepgram"
    )
    assert after == before + 1


def test_llm_and_tts_fall_back_to_their_second_provider(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    llm = world.stage("llm", "openai", fallback=world.stage("llm", "groq"))
    tts = world.stage("tts", "elevenlabs", fallback=world.stage("tts", "openai"))
    gateway.apply(world.routes(llm=llm, tts=tts))
    world.openai.script("500", only="/v1/chat/completions")
    world.elevenlabs.reset("revoked")  # its 401 moves the stage to the fallback
    response = turn(gateway.url, question_wav)
    assert response.status_code == 200, response.text
    providers = {s: p["provider"] for s, p in response.json()["providers"].items()}
    assert providers == {"stt": "deepgram", "llm": "groq", "tts": "openai"}
    assert len(world.openai.calls("/v1/chat/completions")) == 1  # not retried: fell back


def test_a_failing_provider_opens_its_circuit(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    gateway.apply(world.routes())
    world.deepgram.script(*["500"] * 20, only="/v1/listen")
    for _ in range(3):  # GATEWAY_BREAKER_FAILURES=3 failed calls (each tried twice)
        response = turn(gateway.url, question_wav)
        assert error_of(response)["code"] == "upstream_unavailable"
    calls = len(world.deepgram.calls("/v1/listen"))
    assert calls == 6
    response = turn(gateway.url, question_wav)
    assert response.status_code == 503
    assert error_of(response)["code"] == "circuit_open"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert len(world.deepgram.calls("/v1/listen")) == calls  # failed fast, not sent
    revision = f"stt-deepgram-{world.revision}"
    assert gateway.metric("gateway_breaker_open", stage="stt", revision=revision) == 1
    assert (
        gateway.metric(
            "gateway_stage_errors_total", stage="stt", revision=revision, code="circuit_open"
        )
        == 1
    )


def test_a_missing_key_fails_the_stage_until_the_secret_arrives(
    gateway: Gateway, world: World, question_wav: bytes, tmp_path: Path
) -> None:
    absent = tmp_path / "llm" / "api-key"
    llm = world.stage("llm", "openai", apiKeyFile=str(absent))
    gateway.apply(world.routes(llm=llm))
    response = turn(gateway.url, question_wav)
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "api_key_missing" and str(absent) in error["message"]
    assert httpx.get(f"{gateway.url}/health").status_code == 200
    absent.parent.mkdir()
    absent.write_text(world.key("openai"))  # the Secret is created; no restart
    assert turn(gateway.url, question_wav).status_code == 200


def test_a_key_from_the_environment(gateway: Gateway, world: World, question_wav: bytes) -> None:
    world.deepgram.reset(ENV_KEY)
    stt = world.stage("stt", "deepgram", apiKeyFile=None, apiKeyEnv="DEEPGRAM_TEST_KEY")
    gateway.apply(world.routes(stt=stt))
    response = turn(gateway.url, question_wav)
    assert response.status_code == 200, response.text
    assert world.deepgram.calls()[0].headers["authorization"] == f"Token {ENV_KEY}"


def test_a_null_stage_answers_503(gateway: Gateway, world: World, question_wav: bytes) -> None:
    gateway.apply(world.routes(tts=None))
    response = turn(gateway.url, question_wav)
    assert response.status_code == 503
    assert error_of(response)["code"] == "stage_unavailable"
    assert "tts" in error_of(response)["message"]


def test_history_is_sent_and_bounded(gateway: Gateway, world: World, question_wav: bytes) -> None:
    gateway.apply(world.routes())
    session = "s-" + uuid.uuid4().hex
    for n in (1, 2, 3):
        response = turn(gateway.url, question_wav, session_id=session)
        assert response.status_code == 200, response.text
        assert response.json()["session_id"] == session
        assert response.json()["turns"] == min(n, 2)  # GATEWAY_HISTORY_TURNS=2
    roles = [[m["role"] for m in c.json()["messages"]] for c in world.openai.calls("/v1/chat")]
    assert roles == [
        ["system", "user"],
        ["system", "user", "assistant", "user"],
        ["system", "user", "assistant", "user", "assistant", "user"],
    ]


def silence_wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * 16000), np.float32), 16000, format="WAV")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        ({"files": {"file": ("q.wav", b"", "audio/wav")}}, 400, "empty_upload"),
        (
            {"files": {"file": ("q.wav", b"RIFF not really a wav", "audio/wav")}},
            415,
            "unsupported_audio",
        ),
        ({"files": {"file": ("q.wav", silence_wav(12), "audio/wav")}}, 413, "audio_too_long"),
        (
            {"files": {"file": ("q.wav", b"\0" * (3 * 1024 * 1024), "audio/wav")}},
            413,
            "payload_too_large",
        ),
        (
            {"data": {"session_id": "x"}, "files": {"other": ("q.wav", b"x", "audio/wav")}},
            422,
            "invalid_request",
        ),
        ({"json": {"audio": "base64?"}}, 415, "unsupported_media_type"),
        (
            {
                "content": b"--x\r\nbroken",
                "headers": {"content-type": "multipart/form-data; boundary=x"},
            },
            422,
            "invalid_request",
        ),
        (
            {
                "files": {"file": ("q.wav", silence_wav(1), "audio/wav")},
                "data": {"session_id": "a b"},
            },
            422,
            "invalid_request",
        ),
        (
            {
                "files": {"file": ("q.wav", silence_wav(1), "audio/wav")},
                "data": {"sample_rate": "7"},
            },
            422,
            "invalid_request",
        ),
    ],
)
def test_bad_input_is_a_4xx_naming_the_problem(
    gateway: Gateway, world: World, request_kwargs: dict[str, Any], status: int, code: str
) -> None:
    gateway.apply(world.routes())
    response = httpx.post(f"{gateway.url}/v1/turn", timeout=30, **request_kwargs)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code
    assert httpx.get(f"{gateway.url}/health").status_code == 200


def test_raw_audio_body_with_options_in_the_query(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    gateway.apply(world.routes())
    response = httpx.post(
        f"{gateway.url}/v1/turn?sample_rate=16000",
        content=question_wav,
        headers={"content-type": "audio/wav"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert wav_of(response.json())[1] == 16000


def pcm_frames(wav: bytes) -> list[bytes]:
    samples, rate = sf.read(io.BytesIO(wav), dtype="int16")
    assert rate == 16000
    pcm = samples.astype("<i2").tobytes()
    return [pcm[i : i + 640] for i in range(0, len(pcm), 640)]


def stream_turn(ws: Any, frames: list[bytes]) -> list[Any]:
    for frame in frames:
        ws.send(frame)
    ws.send(json.dumps({"type": "end"}))
    events: list[Any] = []
    while True:
        message = ws.recv(timeout=30)
        events.append(message if isinstance(message, bytes) else json.loads(message))
        if isinstance(events[-1], dict) and events[-1]["type"] in ("done", "error"):
            return events


def test_websocket_stream_through_vendors(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    gateway.apply(world.routes())
    with connect(gateway.ws_url + "?session_id=ws-1") as ws:
        ready = json.loads(ws.recv(timeout=10))
        assert ready == {
            "type": "ready",
            "session_id": "ws-1",
            "output_sample_rate": 22050,
            "format": "pcm_s16le",
            "turn_detection": "manual",
        }
        ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        events = stream_turn(ws, pcm_frames(question_wav))
        kinds = ["audio" if isinstance(e, bytes) else e["type"] for e in events]
        assert kinds[0] == "transcript" and kinds[-1] == "done"
        assert events[0]["text"] == Deepgram.transcript
        tokens = "".join(e["text"] for e in events if isinstance(e, dict) and e["type"] == "token")
        assert tokens == OpenAI.reply
        sentences = [e["text"] for e in events if isinstance(e, dict) and e["type"] == "sentence"]
        assert sentences == ["It is sunny and warm today.", "Enjoy your walk in the park!"]
        assert kinds.index("sentence") < kinds.index("audio")
        audio = b"".join(e for e in events if isinstance(e, bytes))
        assert len(audio) // 2 == pytest.approx(0.05 * sum(map(len, sentences)) * 22050, rel=0.01)
        done = events[-1]
        assert done["turns"] == 1 and done["session_id"] == "ws-1"
        assert done["timings"]["first_audio_ms"] <= done["timings"]["total_ms"]

        # Protocol mistakes are answered and the connection carries on.
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "malformed_json"
        ws.send(json.dumps({"type": "dance"}))
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "unknown_message"
        ws.send(json.dumps({"type": "end"}))
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "empty_audio"
        ws.send(json.dumps({"type": "start", "sample_rate": 3}))
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "invalid_request"

        events = stream_turn(ws, pcm_frames(question_wav))
        assert events[-1]["type"] == "done" and events[-1]["turns"] == 2


def test_websocket_reports_a_failed_stage(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    gateway.apply(world.routes())
    world.elevenlabs.reset("revoked")
    with connect(gateway.ws_url) as ws:
        ws.recv(timeout=10)
        events = stream_turn(ws, pcm_frames(question_wav))
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "upstream_auth_failed"


def test_an_invalid_routes_file_keeps_the_routes_in_use(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    generation = gateway.apply(world.routes())
    rejected = gateway.metric("gateway_routes_reloads_total", result="rejected")
    gateway.apply("{ this is not json", expect_change=False)
    state = httpx.get(f"{gateway.url}/v1/routes").json()
    assert state["generation"] == generation and "not JSON" in state["error"]
    assert turn(gateway.url, question_wav).status_code == 200
    bad_vendor = world.routes()
    bad_vendor["stages"]["stt"]["vendor"] = "whisperer"
    gateway.apply(bad_vendor, expect_change=False)
    assert httpx.get(f"{gateway.url}/ready").status_code == 200
    assert gateway.metric("gateway_routes_reloads_total", result="rejected") == rejected + 2
    assert gateway.apply(world.routes()) == generation + 1
    assert "error" in gateway.log() and "keeping the routes in use" in gateway.log()


def test_usage_and_latency_metrics_carry_agent_provider_and_revision(
    gateway: Gateway, world: World, question_wav: bytes
) -> None:
    gateway.apply(world.routes())
    assert turn(gateway.url, question_wav).status_code == 200
    labels = {"agent": "test"}
    rev = world.revision
    assert gateway.metric(
        "gateway_stt_audio_seconds_total",
        **labels,
        provider="deepgram",
        revision=f"stt-deepgram-{rev}",
    ) == pytest.approx(3.156, abs=0.01)
    assert gateway.metric(
        "gateway_llm_tokens_total",
        **labels,
        provider="openai",
        revision=f"llm-openai-{rev}",
        direction="output",
    ) == len(OpenAI.reply.split())
    assert gateway.metric(
        "gateway_tts_characters_total",
        **labels,
        provider="elevenlabs",
        revision=f"tts-elevenlabs-{rev}",
    ) == len(OpenAI.reply)
    assert (
        gateway.metric(
            "gateway_stage_duration_seconds_count",
            **labels,
            stage="llm",
            provider="openai",
            revision=f"llm-openai-{rev}",
        )
        == 1
    )
    assert gateway.metric("gateway_time_to_first_audio_seconds_count", mode="turn") >= 1
    assert gateway.metric("gateway_route_info", stage="tts", revision=f"tts-elevenlabs-{rev}") == 1


def test_keys_never_appear_in_the_log(gateway: Gateway) -> None:
    log = gateway.log()
    assert "routes applied" in log and "HTTP Request" in log  # the log is really there
    leaked = [key for key in USED_KEYS if key in log]
    assert leaked == []
