"""The bad-input catalogue, engines: every kind of bad request, as a table per engine, gets a
4xx in the one JSON error shape naming the problem (or, for broken HTTP framing, the HTTP
server's own 400 and a closed connection), and the engine stays healthy: /health and
/ready answer and one valid request still works after each case. Then schemathesis
against each engine's OpenAPI schema, with a bounded number of examples: no 5xx."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from badrequests import (
    Answer,
    Case,
    MiB,
    assert_refused,
    call,
    chunked_over,
    float_wav,
    fuzz_openapi,
    post,
    protocol_cases,
    wav_bytes,
    with_rate,
)
from enginekit import EngineProcess, Spoken, piper_voice, smollm2_gguf

pytestmark = pytest.mark.engines

BODY_LIMIT = 26 * MiB  # ENGINE_MAX_BODY_BYTES's default, which the test engines keep


def still_healthy(server: EngineProcess, valid: Callable[[], httpx.Response]) -> None:
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    assert httpx.get(f"{server.url}/ready", timeout=30).status_code == 200
    response = valid()
    assert response.status_code == 200, response.text


def run_case(server: EngineProcess, case: Case, valid: Callable[[], httpx.Response]) -> None:
    assert_refused(case.send(server.url), case)
    still_healthy(server, valid)


def ids(cases: list[Case]) -> list[str]:
    return [case.name for case in cases]


# --- STT ---

TONE = wav_bytes((0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)


def upload(data: bytes, path: str = "/transcribe", **fields: str) -> Callable[[str], Answer]:
    return post(path, files={"file": ("a.wav", data, "audio/wav")}, data=fields)


def multipart_head(boundary: str = "b0undary") -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    ).encode()


STT_CASES = [
    Case("empty file", upload(b""), 400, "empty_upload", "file"),
    Case(
        "text, not audio",
        upload(b"this is not audio at all" * 100),
        415,
        "unsupported_audio",
        "file",
    ),
    Case(
        "RIFF header, no WAVE inside",
        upload(b"RIFF\x00\x00\x00\x00WAVEjunk"),
        415,
        "unsupported_audio",
        "file",
    ),
    Case("body over the limit", upload(b"\0" * (BODY_LIMIT + MiB)), 413, "payload_too_large"),
    Case(
        "chunked body over the limit",
        chunked_over(
            "/transcribe", "multipart/form-data; boundary=b0undary", multipart_head(), BODY_LIMIT
        ),
        413,
        "payload_too_large",
        closes=True,
    ),
    Case(
        "no file field",
        post("/transcribe", data={"language": "en"}),
        422,
        "invalid_request",
        "file",
    ),
    Case(
        "file sent as a text field",
        post("/transcribe", data={"file": "hello"}),
        422,
        "invalid_request",
        "file",
    ),
    Case("not multipart", post("/transcribe", json={"file": "x"}), 422, "invalid_request", "file"),
    Case(
        "multipart without its boundary",
        post(
            "/transcribe", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}
        ),
        400,
        "malformed_body",
    ),
    Case(
        "multipart cut short",
        post(
            "/transcribe",
            content=multipart_head() + b"RIFF",
            headers={"content-type": "multipart/form-data; boundary=b0undary"},
        ),
        422,
        "invalid_request",
        "file",
    ),
    Case(
        "language the English model lacks",
        upload(TONE, language="fr"),
        400,
        "unsupported_language",
        "language",
    ),
    Case(
        "language of 10,000 characters",
        upload(TONE, language="x" * 10_000),
        400,
        "unsupported_language",
        "language",
    ),
    Case("language with a NUL", upload(TONE, language="e\x00n"), 400, "invalid_text", "language"),
    Case("temperature 7", upload(TONE, temperature="7"), 422, "invalid_request", "temperature"),
    Case(
        "temperature -0.5", upload(TONE, temperature="-0.5"), 422, "invalid_request", "temperature"
    ),
    Case("temperature NaN", upload(TONE, temperature="nan"), 422, "invalid_request", "temperature"),
    Case(
        "temperature not a number",
        upload(TONE, temperature="warm"),
        422,
        "invalid_request",
        "temperature",
    ),
    Case(
        "prompt over 2,000 characters",
        upload(TONE, prompt="p" * 2001),
        422,
        "invalid_request",
        "prompt",
    ),
    Case("prompt with a NUL", upload(TONE, prompt="call\x00me"), 400, "invalid_text", "prompt"),
    Case(
        "response_format srt",
        upload(TONE, "/v1/audio/transcriptions", response_format="srt"),
        422,
        "invalid_request",
        "response_format",
    ),
    Case(
        "response_format empty",
        upload(TONE, "/v1/audio/transcriptions", response_format=""),
        400,
        "unsupported_format",
        "response_format",
    ),
    Case(
        "WAV claiming 2,147,483,647 Hz",
        upload(with_rate(TONE, 2_147_483_647)),
        400,
        "unsupported_sample_rate",
        "file",
    ),
    Case(
        "WAV claiming 100 Hz (120 KB as 600 s)",
        upload(with_rate(wav_bytes(np.zeros(60_000, np.float32), 16000), 100)),
        400,
        "unsupported_sample_rate",
        "file",
    ),
    Case("WAV claiming 0 Hz", upload(with_rate(TONE, 0)), 415, "unsupported_audio", "file"),
    Case(
        "WAV of 16 channels",
        upload(wav_bytes(np.zeros((1600, 16), np.float32), 16000)),
        400,
        "unsupported_channels",
        "file",
    ),
    Case(
        "float WAV full of NaN",
        upload(float_wav(np.full(16000 * 5, np.nan))),
        400,
        "invalid_audio",
        "file",
    ),
    Case(
        "float WAV with one inf",
        upload(float_wav(np.r_[np.zeros(8000), np.inf])),
        400,
        "invalid_audio",
        "file",
    ),
    Case(
        "601 s of 8 kHz audio",
        upload(wav_bytes(np.zeros(8000 * 601, np.float32), 8000, "PCM_U8")),
        413,
        "audio_too_long",
        "file",
    ),
    Case(
        "header only, no samples",
        upload(wav_bytes(np.zeros(0, np.float32), 16000)),
        400,
        "empty_audio",
        "file",
    ),
    Case("GET on an upload endpoint", call("GET", "/transcribe"), 405, "method_not_allowed"),
    Case("unknown path", call("POST", "/transcribe/extra"), 404, "not_found"),
    *protocol_cases(
        "/transcribe",
        "multipart/form-data; boundary=b0undary",
        multipart_head() + TONE + b"\r\n--b0undary--\r\n",
        multipart_head() + TONE[:10],
    ),
]


@pytest.mark.parametrize("case", STT_CASES, ids=ids(STT_CASES))
def test_stt_refuses(stt_whispercpp: EngineProcess, spoken: list[Spoken], case: Case) -> None:
    def valid() -> httpx.Response:
        return httpx.post(
            f"{stt_whispercpp.url}/transcribe",
            files={"file": ("a.wav", spoken[0].wav, "audio/wav")},
            timeout=120,
        )

    run_case(stt_whispercpp, case, valid)


def test_stt_float_nan_is_refused_by_faster_whisper_too(stt_faster_whisper: EngineProcess) -> None:
    case = STT_CASES[ids(STT_CASES).index("float WAV full of NaN")]
    assert_refused(case.send(stt_faster_whisper.url), case)


# --- TTS ---


def speak(body: object, path: str = "/synthesize") -> Callable[[str], Answer]:
    return post(path, json=body)


def speak_raw(body: bytes, path: str = "/synthesize") -> Callable[[str], Answer]:
    return post(path, content=body, headers={"content-type": "application/json"})


TTS_CASES = [
    Case("unknown voice", speak({"text": "Hi", "voice": "nobody"}), 400, "unknown_voice", "voice"),
    Case(
        "voice of 100,000 characters",
        speak({"text": "Hi", "voice": "v" * 100_000}),
        422,
        "invalid_request",
        "voice",
    ),
    Case(
        "speech: voice of 100,000 characters",
        speak({"input": "Hi", "voice": "v" * 100_000}, "/v1/audio/speech"),
        422,
        "invalid_request",
        "voice",
    ),
    Case("empty text", speak({"text": ""}), 400, "empty_text", "text"),
    Case("whitespace text", speak({"text": "  \n\t "}), 400, "empty_text", "text"),
    Case(
        "text over 4,096 characters", speak({"text": "word " * 1000}), 413, "text_too_large", "text"
    ),
    Case("text with a NUL", speak({"text": "Hi\u0000there"}), 400, "invalid_text", "text"),
    Case(
        "streamed text with a NUL",
        speak({"text": "Hi\u0000there", "stream": True}),
        400,
        "invalid_text",
        "text",
    ),
    Case(
        "speech: input with a NUL",
        speak({"input": "Hi\u0000"}, "/v1/audio/speech"),
        400,
        "invalid_text",
        "text",
    ),
    Case(
        "lone high surrogate",
        speak_raw(b'{"text": "Hi \\ud800 there"}'),
        400,
        "invalid_text",
        "text",
    ),
    Case(
        "streamed lone low surrogate",
        speak_raw(b'{"text": "Hi \\udfff", "stream": true}'),
        400,
        "invalid_text",
        "text",
    ),
    Case(
        "speech: lone surrogate",
        speak_raw(b'{"input": "\\udbff!"}', "/v1/audio/speech"),
        400,
        "invalid_text",
        "text",
    ),
    Case("invalid UTF-8", speak_raw(b'{"text": "caf\xe9"}'), 400, "malformed_body"),
    Case("no text", speak({}), 422, "invalid_request", "text"),
    Case("text not a string", speak({"text": 42}), 422, "invalid_request", "text"),
    Case("speed 9", speak({"text": "Hi", "speed": 9}), 422, "invalid_request", "speed"),
    Case("speed 0", speak({"text": "Hi", "speed": 0}), 422, "invalid_request", "speed"),
    Case("speed NaN", speak_raw(b'{"text": "Hi", "speed": NaN}'), 422, "invalid_request", "speed"),
    Case(
        "speed 1e999", speak_raw(b'{"text": "Hi", "speed": 1e999}'), 422, "invalid_request", "speed"
    ),
    Case(
        "sample_rate 3",
        speak({"text": "Hi", "sample_rate": 3}),
        422,
        "invalid_request",
        "sample_rate",
    ),
    Case(
        "sample_rate 2**63",
        speak({"text": "Hi", "sample_rate": 2**63}),
        422,
        "invalid_request",
        "sample_rate",
    ),
    Case(
        "format mp3 on /synthesize",
        speak({"text": "Hi", "format": "mp3"}),
        422,
        "invalid_request",
        "format",
    ),
    Case("unknown field", speak({"text": "Hi", "colour": "red"}), 422, "invalid_request", "colour"),
    Case("an array, not an object", speak(["not", "an", "object"]), 422, "invalid_request"),
    Case("malformed JSON", speak_raw(b'{"text": "Hi"'), 400, "malformed_json"),
    Case(
        "JSON nested 100,000 deep",
        speak_raw(b"[" * 100_000 + b"]" * 100_000),
        400,
        "malformed_body",
    ),
    Case(
        "speech: unknown voice",
        speak({"input": "Hi", "voice": "alloy"}, "/v1/audio/speech"),
        400,
        "unknown_voice",
        "voice",
    ),
    Case(
        "speech: response_format mp3",
        speak({"input": "Hi", "response_format": "mp3"}, "/v1/audio/speech"),
        400,
        "unsupported_format",
        "response_format",
    ),
    Case(
        "speech: response_format empty",
        speak({"input": "Hi", "response_format": ""}, "/v1/audio/speech"),
        422,
        "invalid_request",
        "response_format",
    ),
    Case("speech: empty input", speak({"input": ""}, "/v1/audio/speech"), 400, "empty_text"),
    Case(
        "chunked body over the limit",
        chunked_over("/synthesize", "application/json", b'{"text": "', BODY_LIMIT),
        413,
        "payload_too_large",
        closes=True,
    ),
    Case("GET /synthesize", call("GET", "/synthesize"), 405, "method_not_allowed"),
    Case("unknown path", call("GET", "/no/such/path"), 404, "not_found"),
    *protocol_cases("/synthesize", "application/json", b'{"text": "Hi."}', b'{"text": "'),
]


@pytest.mark.parametrize("case", TTS_CASES, ids=ids(TTS_CASES))
def test_tts_refuses(tts: EngineProcess, case: Case) -> None:
    def valid() -> httpx.Response:
        return httpx.post(f"{tts.url}/synthesize", json={"text": "Still here."}, timeout=120)

    run_case(tts, case, valid)


# Odd but valid text: spoken (200), never a 5xx.
ODD_TEXT = [
    "Emoji 😀 and a flag 🇫🇷.",
    "Right-to-left: \u05e9\u05dc\u05d5\u05dd and \u0645\u0631\u062d\u0628\u0627.",
    "Combining marks: e\u0301" + "\u0301" * 200 + ".",
    "Zero width\u200b\u200c\u200d joiners and a BOM \ufeff.",
    "Control characters \x01\x07\x1b[31m and a bell.",
    "Line\u2028separator and\u2029paragraph.",
    "Noncharacters \uffff \ufffe and private use \ue000.",
    "a" * 300,
    "Numbers 1234567890 " * 4,
]


@pytest.mark.parametrize("text", ODD_TEXT, ids=[f"odd-{i}" for i in range(len(ODD_TEXT))])
def test_tts_speaks_odd_but_valid_text(tts: EngineProcess, text: str) -> None:
    for body in ({"text": text}, {"text": text, "stream": True}):
        response = httpx.post(f"{tts.url}/synthesize", json=body, timeout=120)
        assert response.status_code == 200, response.text
    assert httpx.get(f"{tts.url}/health").status_code == 200


def text_length_count(tts: EngineProcess) -> tuple[float, float]:
    found = {}
    for line in httpx.get(f"{tts.url}/metrics").text.splitlines():
        if line.startswith(("tts_text_length_chars_count", "tts_text_length_chars_sum")):
            name, value = line.split(" ")
            found[name] = float(value)
    return found.get("tts_text_length_chars_count", 0), found.get("tts_text_length_chars_sum", 0)


def test_tts_text_length_counts_only_text_spoken(tts: EngineProcess) -> None:
    before = text_length_count(tts)
    for body in (
        {"text": "Hi", "voice": "nobody"},
        {"text": "word " * 1000},
        {"text": "Hi\u0000", "stream": True},
    ):
        assert httpx.post(f"{tts.url}/synthesize", json=body).status_code in (400, 413)
    assert text_length_count(tts) == before
    text = "Counted once."
    for stream in (False, True):
        response = httpx.post(f"{tts.url}/synthesize", json={"text": text, "stream": stream})
        assert response.status_code == 200
    count, total = text_length_count(tts)
    assert (count - before[0], total - before[1]) == (2, 2 * len(text))


# --- LLM ---


def ask(path: str, body: object) -> Callable[[str], Answer]:
    return post(path, json=body)


def chat(**fields: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": "Hi"}], **fields}


MANY = [{"role": "user", "content": "hi"}] * 10_000

LLM_CASES = [
    *[
        Case(f"max_tokens {bad} ({path})", ask(path, body), 422, "invalid_request", "max_tokens")
        for bad in (0, -3, 100_000)
        for path, body in (
            ("/generate", {"prompt": "Hi", "max_tokens": bad}),
            ("/v1/chat/completions", chat(max_tokens=bad)),
        )
    ],
    Case("empty prompt", ask("/generate", {"prompt": ""}), 400, "empty_text", "prompt"),
    Case("whitespace message", ask("/chat", {"message": " "}), 400, "empty_text", "message"),
    Case(
        "prompt over the limit",
        ask("/generate", {"prompt": "x" * 40_000}),
        413,
        "prompt_too_large",
        "prompt",
    ),
    Case(
        "prompt with a NUL", ask("/generate", {"prompt": "Hi\u0000"}), 400, "invalid_text", "prompt"
    ),
    Case(
        "system with a NUL",
        ask("/generate", {"prompt": "Hi", "system": "\u0000"}),
        400,
        "invalid_text",
        "system",
    ),
    Case(
        "stop with a NUL",
        ask("/generate", {"prompt": "Hi", "stop": ["\u0000"]}),
        400,
        "invalid_text",
        "stop",
    ),
    Case(
        "five stop strings",
        ask("/generate", {"prompt": "Hi", "stop": list("abcde")}),
        422,
        "invalid_request",
        "stop",
    ),
    Case(
        "chat message with a lone surrogate",
        post(
            "/chat", content=b'{"message": "\\ud83d"}', headers={"content-type": "application/json"}
        ),
        400,
        "invalid_text",
        "message",
    ),
    Case(
        "completion content with a NUL",
        ask("/v1/chat/completions", {"messages": [{"role": "user", "content": "a\u0000b"}]}),
        400,
        "invalid_text",
        "messages",
    ),
    Case(
        "bad session_id",
        ask("/chat", {"message": "Hi", "session_id": "bad id!"}),
        422,
        "invalid_request",
        "session_id",
    ),
    Case(
        "no messages",
        ask("/v1/chat/completions", {"messages": []}),
        422,
        "invalid_request",
        "messages",
    ),
    Case(
        "unknown role",
        ask("/v1/chat/completions", {"messages": [{"role": "robot", "content": "Hi"}]}),
        422,
        "invalid_request",
    ),
    Case(
        "no user content",
        ask("/v1/chat/completions", {"messages": [{"role": "system", "content": "Be nice"}]}),
        400,
        "empty_text",
        "messages",
    ),
    Case(
        "content part of an unknown type",
        ask(
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "image_url", "url": "x"}]}]},
        ),
        422,
        "invalid_request",
    ),
    Case(
        "temperature 5",
        ask("/v1/chat/completions", chat(temperature=5)),
        422,
        "invalid_request",
        "temperature",
    ),
    Case("n 2", ask("/v1/chat/completions", chat(n=2)), 422, "invalid_request", "n"),
    Case(
        "10,000 messages, streamed",
        ask("/v1/chat/completions", {"messages": MANY, "stream": True}),
        400,
        "context_overflow",
        "messages",
    ),
    Case(
        "10,000 messages",
        ask("/v1/chat/completions", {"messages": MANY}),
        400,
        "context_overflow",
        "messages",
    ),
    Case(
        "malformed JSON",
        post(
            "/v1/chat/completions",
            content=b"{'messages': nope}",
            headers={"content-type": "application/json"},
        ),
        400,
        "malformed_json",
    ),
    Case(
        "chunked body over the limit",
        chunked_over("/generate", "application/json", b'{"prompt": "', BODY_LIMIT),
        413,
        "payload_too_large",
        closes=True,
    ),
    *protocol_cases("/generate", "application/json", b'{"prompt": "Hi"}', b'{"prompt": "'),
]


@pytest.mark.parametrize("case", LLM_CASES, ids=ids(LLM_CASES))
def test_llm_refuses(llm_llamacpp: EngineProcess, case: Case) -> None:
    def valid() -> httpx.Response:
        return httpx.post(
            f"{llm_llamacpp.url}/generate", json={"prompt": "Say hi.", "max_tokens": 4}, timeout=120
        )

    run_case(llm_llamacpp, case, valid)


# --- OpenAPI: the error answers are documented, in the error shape ---


@pytest.mark.parametrize(
    ("fixture", "path", "statuses"),
    [
        ("stt_whispercpp", "/transcribe", {"400", "408", "413", "415", "422", "429", "503"}),
        ("tts", "/v1/audio/speech", {"400", "408", "413", "422", "429", "503"}),
        ("llm_llamacpp", "/v1/chat/completions", {"400", "408", "413", "422", "429", "503"}),
    ],
)
def test_openapi_documents_the_error_answers(
    request: pytest.FixtureRequest, fixture: str, path: str, statuses: set[str]
) -> None:
    server: EngineProcess = request.getfixturevalue(fixture)
    schema = httpx.get(f"{server.url}/openapi.json").json()
    responses = schema["paths"][path]["post"]["responses"]
    assert statuses <= set(responses), sorted(responses)
    for status in statuses:
        ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody"), ref
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["properties"]) == {"code", "message", "field", "correlation_id"}


# --- schemathesis ---

# Per operation and per mode (examples that fit the schema, examples that do not).
EXAMPLES = 20


@pytest.fixture(scope="module")
def tts_fuzz() -> Iterator[EngineProcess]:
    """Piper with a short text limit, so random text of any allowed length is quick."""
    server = EngineProcess(
        "tts", {"TTS_VOICE_PATH": str(piper_voice()), "TTS_MAX_TEXT_CHARS": "200"}
    ).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llm_fuzz() -> Iterator[EngineProcess]:
    """llama.cpp allowing short completions only, so a random max_tokens is quick."""
    server = EngineProcess(
        "llm",
        {
            "LLM_MODEL_PATH": str(smollm2_gguf()),
            "LLM_THREADS": "2",
            "LLM_MAX_TOKENS": "8",
            "LLM_MAX_TOKENS_LIMIT": "16",
            "LLM_MAX_PROMPT_CHARS": "2000",
        },
    ).wait_ready()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "fixture", ["stt_whispercpp", "stt_faster_whisper", "tts_fuzz", "llm_fuzz"]
)
def test_schemathesis_finds_no_server_error(request: pytest.FixtureRequest, fixture: str) -> None:
    server: EngineProcess = request.getfixturevalue(fixture)
    report = fuzz_openapi(server.url, EXAMPLES)
    print(f"schemathesis {fixture}: {report.examples} examples, statuses {report.statuses}")
    assert report.examples > 0
    assert report.server_errors == []
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_catalogue_size() -> None:
    """What the tier covers, printed for the record."""
    print(json.dumps({"stt": len(STT_CASES), "tts": len(TTS_CASES), "llm": len(LLM_CASES)}))
    assert min(len(STT_CASES), len(TTS_CASES), len(LLM_CASES)) >= 20
