"""Pure parts of the gateway: the routes format (also as the operator's own code renders
it), the sentence splitter, the circuit breaker, retry decisions, vendor error bodies, key
scrubbing, PCM resampling."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest
from ready_assets import file_asset_spec, ready_asset

from voice_engines.gateway.adapters.base import ProviderError
from voice_engines.gateway.adapters.http import error_text, parse_retry_after
from voice_engines.gateway.audio import PcmResampler
from voice_engines.gateway.breaker import CircuitBreaker
from voice_engines.gateway.keys import RedactingFilter, Secrets
from voice_engines.gateway.routes import (
    Routes,
    RoutesError,
    StageRoute,
    llm_settings,
    parse_routes,
    stt_settings,
    tts_settings,
)
from voice_engines.gateway.sentences import SentenceSplitter
from voice_operator.api.voiceagent import COMPONENTS, ComponentRevision, VoiceAgentSpec
from voice_operator.observe import AssetView, SecretPresence, asset_view
from voice_operator.plan.revisions import desired_revision
from voice_operator.render.meta import Owner
from voice_operator.render.voiceagent import Agent, desired_gateway_deployment, desired_routes
from voice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

# The operator's format, as issue and contract show it.
OPERATOR_ROUTES = {
    "agent": "support",
    "namespace": "voice",
    "stages": {
        "stt": {
            "provider": "internal",
            "url": "http://support-stt.voice.svc:8080",
            "revision": "3f2a9c01de",
            "model": "whisper",
            "modelVersion": "v2",
            "settings": {"threads": 2, "temperature": 0, "language": "en"},
        },
        "llm": {
            "provider": "external",
            "vendor": "groq",
            "model": "llama-3.1-8b-instant",
            "url": None,
            "voice": None,
            "apiKeyFile": "/var/run/secrets/voiceops/llm/api-key",
            "revision": "9b1c",
            "settings": {
                "maxTokens": 256,
                "temperature": 0.7,
                "contextSize": 2048,
                "systemPrompt": None,
            },
        },
        "tts": {
            "provider": "internal",
            "url": "http://support-tts.voice.svc:8080",
            "revision": "77aa",
            "model": "joe",
            "modelVersion": "v1",
            "settings": {"speed": 1},
        },
    },
}


def test_operator_routes_parse() -> None:
    routes = parse_routes(json.dumps(OPERATOR_ROUTES, indent=2, sort_keys=True))
    llm = routes.route("llm")
    assert llm is not None
    assert (llm.name, llm.revision, llm.api_key_file) == (
        "groq",
        "9b1c",
        "/var/run/secrets/voiceops/llm/api-key",
    )
    assert llm_settings(llm).max_tokens == 256
    assert routes.route("stt").name == "internal"  # type: ignore[union-attr]
    # Keys' whereabouts stay out of what /v1/routes shows.
    assert "api-key" not in json.dumps(routes.summary())


def test_null_and_missing_stages_have_no_route() -> None:
    routes = parse_routes(json.dumps({"agent": "a", "stages": {"stt": None}}))
    assert routes.route("stt") is None
    assert routes.route("tts") is None


def test_optional_fields_parse() -> None:
    document = json.loads(json.dumps(OPERATOR_ROUTES))
    document["stages"]["stt"]["fallback"] = {
        "provider": "external",
        "vendor": "deepgram",
        "apiKeyEnv": "DEEPGRAM_KEY",
        "revision": "fb1",
    }
    document["stages"]["stt"]["someFutureField"] = {"x": 1}
    stt = parse_routes(json.dumps(document)).route("stt")
    assert stt is not None and stt.fallback is not None
    assert [r.name for r in stt.candidates()] == ["internal", "deepgram"]
    assert stt.fallback.api_key_env == "DEEPGRAM_KEY"


# What the operator renders, through its own code: a validated spec, each stage resolved
# to a ComponentRevision (against its ModelAsset, or its vendor and key), the routes
# ConfigMap, and the gateway Deployment that mounts the keys.
OWNER = Owner("VoiceAgent", "support", "voice", "uid-1")
ASSETS = {
    "whisper": ("stt", "ggml", "model.bin"),
    "smollm": ("llm", "gguf", "model.gguf"),
    "joe": ("tts", "onnx", "joe.onnx"),
}
SECRETS = {
    name: SecretPresence(True, frozenset({"api-key"}))
    for name in ("deepgram", "groq", "elevenlabs", "openai")
}


def _asset(name: str) -> dict[str, Any]:
    engine, fmt, main = ASSETS[name]
    return ready_asset(name, file_asset_spec(engine, fmt, main, "v3"), main)


def _vendor(vendor: str, **fields: str) -> dict[str, Any]:
    return {"vendor": vendor, "apiKeySecretRef": {"name": vendor, "key": "api-key"}, **fields}


def _rendered(spec: dict[str, Any]) -> tuple[Routes, dict[str, Any]]:
    """The routes the gateway parses from the operator's ConfigMap, and the operator's
    gateway Deployment."""
    agent = Agent(OWNER, VoiceAgentSpec.model_validate(spec))
    assets: dict[str, AssetView | None] = {name: asset_view(_asset(name)) for name in ASSETS}
    revisions: dict[str, ComponentRevision | None] = {}
    fallbacks: dict[str, dict[str, Any]] = {}
    keys: dict[str, dict[str, str]] = {}
    for stage in COMPONENTS:
        component = agent.spec.component(stage)
        revision = desired_revision(stage, component, assets, SECRETS, OperatorSettings())
        assert isinstance(revision, ComponentRevision), revision
        revisions[stage] = revision
        if component.external is not None:
            ref = component.external.api_key_secret_ref
            keys[stage] = {"name": ref.name, "key": ref.key}
        if component.fallback is not None:
            fallbacks[stage] = component.fallback.wire()
            ref = component.fallback.api_key_secret_ref
            keys[f"{stage}-fallback"] = {"name": ref.name, "key": ref.key}
    configmap = desired_routes(agent, revisions, fallbacks)
    deployment = desired_gateway_deployment(agent, keys, 1, OperatorSettings())
    return parse_routes(configmap["data"]["routes.json"]), deployment


def _mounted_key_files(deployment: dict[str, Any]) -> set[str]:
    """The files the gateway pod sees in its keys volume."""
    pod = deployment["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "keys"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "keys"]
    return {
        f"{mount['mountPath']}/{item['path']}"
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }


def _wire(route: StageRoute | None) -> tuple[Any, ...]:
    assert route is not None
    return (route.provider, route.vendor, route.model, route.url, route.api_key_file)


def test_the_gateway_parses_the_operators_internal_routes() -> None:
    routes, deployment = _rendered(
        {
            "stt": {"model": "whisper", "settings": {"language": "de", "temperature": 0.2}},
            "llm": {"model": "smollm", "settings": {"maxTokens": 64, "systemPrompt": "Be brief."}},
            "tts": {"model": "joe", "settings": {"speed": 1.25}},
        }
    )
    assert (routes.agent, routes.namespace) == ("support", "voice")
    for stage, model in (("stt", "whisper"), ("llm", "smollm"), ("tts", "joe")):
        route = routes.route(stage)  # type: ignore[arg-type]
        assert _wire(route) == (
            "internal",
            None,
            model,
            f"http://support-{stage}.voice.svc:8080",
            None,
        )
        assert route is not None
        assert (route.name, route.model_version, route.fallback) == ("internal", "v3", None)
        assert route.revision
    stt, llm, tts = (routes.route(s) for s in ("stt", "llm", "tts"))
    assert stt is not None and llm is not None and tts is not None
    assert (stt_settings(stt).language, stt_settings(stt).temperature) == ("de", 0.2)
    assert (llm_settings(llm).max_tokens, llm_settings(llm).system_prompt) == (64, "Be brief.")
    assert tts_settings(tts).speed == 1.25
    assert _mounted_key_files(deployment) == set()


def test_the_gateway_parses_the_operators_vendor_routes_and_fallback() -> None:
    routes, deployment = _rendered(
        {
            "stt": {
                "provider": "external",
                "external": _vendor("deepgram", model="nova-3"),
                "settings": {"language": "en"},
            },
            "llm": {
                "provider": "external",
                "external": _vendor("groq", model="llama-3.1-8b-instant"),
                "fallback": _vendor(
                    "openai", model="gpt-4o-mini", url="https://llm.example.com/v1"
                ),
                "settings": {"maxTokens": 128, "temperature": 0.3},
            },
            "tts": {
                "provider": "external",
                "external": _vendor("elevenlabs", model="eleven_flash_v2_5", voice="Rachel"),
            },
        }
    )
    keys = "/var/run/secrets/voiceops"
    stt, llm, tts = (routes.route(s) for s in ("stt", "llm", "tts"))
    assert _wire(stt) == ("external", "deepgram", "nova-3", None, f"{keys}/stt/api-key")
    assert _wire(llm) == (
        "external",
        "groq",
        "llama-3.1-8b-instant",
        None,
        f"{keys}/llm/api-key",
    )
    assert _wire(tts) == (
        "external",
        "elevenlabs",
        "eleven_flash_v2_5",
        None,
        f"{keys}/tts/api-key",
    )
    assert stt is not None and llm is not None and tts is not None
    assert tts.voice == "Rachel"
    assert stt.fallback is None and tts.fallback is None
    assert llm.fallback is not None
    assert _wire(llm.fallback) == (
        "external",
        "openai",
        "gpt-4o-mini",
        "https://llm.example.com/v1",
        f"{keys}/llm-fallback/api-key",
    )
    assert [r.name for r in llm.candidates()] == ["groq", "openai"]
    # The fallback runs with the stage's settings.
    assert llm_settings(llm.fallback).max_tokens == llm_settings(llm).max_tokens == 128
    assert stt_settings(stt).language == "en"
    assert all(r.api_key_env is None for r in (stt, llm, tts, llm.fallback))
    # Every key file a route names is one the gateway pod mounts.
    assert _mounted_key_files(deployment) == {
        f"{keys}/stt/api-key",
        f"{keys}/llm/api-key",
        f"{keys}/llm-fallback/api-key",
        f"{keys}/tts/api-key",
    }


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d["stages"]["llm"].update(vendor="elevenlabs"), "vendor 'elevenlabs'"),
        (lambda d: d["stages"]["stt"].pop("url"), "needs url"),
        (lambda d: d["stages"]["tts"].update(provider="magic"), "provider"),
        (lambda d: d["stages"]["llm"]["settings"].update(temperature=9), "temperature"),
        (lambda d: d["stages"].update(vision={"provider": "internal"}), "vision"),
        (
            lambda d: d["stages"]["stt"].update(
                fallback={
                    "provider": "internal",
                    "url": "http://a:1",
                    "fallback": {"provider": "internal", "url": "http://b:1"},
                }
            ),
            "fallback of its own",
        ),
    ],
)
def test_invalid_routes_name_the_problem(change: object, problem: str) -> None:
    document = json.loads(json.dumps(OPERATOR_ROUTES))
    change(document)  # type: ignore[operator]
    with pytest.raises(RoutesError, match=problem):
        parse_routes(json.dumps(document))


@pytest.mark.parametrize("text", ["", "{", "[]", '"routes"'])
def test_routes_that_are_not_an_object(text: str) -> None:
    with pytest.raises(RoutesError):
        parse_routes(text)


def split_stream(text: str, piece: int) -> list[str]:
    splitter = SentenceSplitter()
    out: list[str] = []
    for i in range(0, len(text), piece):
        out += splitter.feed(text[i : i + piece])
    rest = splitter.flush()
    return out + ([rest] if rest else [])


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_sentences_come_out_whole_however_the_tokens_fall(piece: int) -> None:
    text = "Hello there! It costs 3.50 dollars, Mr. Smith. Is that fine?\nYes. Bye"
    assert split_stream(text, piece) == [
        "Hello there!",
        "It costs 3.50 dollars, Mr. Smith.",
        "Is that fine?",
        "Yes.",
        "Bye",
    ]


def test_a_sentence_is_only_final_once_the_next_character_arrives() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("It is 3.") == []
    assert splitter.feed("5 degrees. ") == ["It is 3.5 degrees."]


@pytest.mark.parametrize("piece", [1, 2, 5, 1000])
def test_cjk_sentences_end_at_their_stops_without_spaces(piece: int) -> None:
    text = "今天天气很好。我们去公园吧！你觉得怎么样？好的"
    assert split_stream(text, piece) == [
        "今天天气很好。",
        "我们去公园吧！",
        "你觉得怎么样？",
        "好的",
    ]


@pytest.mark.parametrize("piece", [1, 4, 1000])
@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        (
            "Meet me at 5 p.m. tomorrow. Dr. Smith will come.",
            ["Meet me at 5 p.m. tomorrow.", "Dr. Smith will come."],
        ),
        (
            "Bring a snack, e.g. an apple. Or i.e. fruit. Fine.",
            ["Bring a snack, e.g. an apple.", "Or i.e. fruit.", "Fine."],
        ),
        ("The U.S. is big. Prof. Lee agrees.", ["The U.S. is big.", "Prof. Lee agrees."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ],
    ids=["p.m.-and-Dr.", "e.g.-and-i.e.", "U.S.-and-Prof.", "quoted-end"],
)
def test_abbreviations_do_not_end_sentences(text: str, sentences: list[str], piece: int) -> None:
    assert split_stream(text, piece) == sentences


def test_a_dotted_abbreviation_waits_for_the_next_word() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Come at 5 p.m. ") == []
    assert splitter.feed("sharp. ") == ["Come at 5 p.m. sharp."]
    assert splitter.feed("See you at 6 p.m. ") == []
    assert splitter.feed("Bye") == ["See you at 6 p.m."]
    assert splitter.flush() == "Bye"


def test_a_sentence_ending_before_a_space_goes_out_at_once_unless_an_abbreviation() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Ask Dr. ") == []
    assert splitter.feed("Smith now. ") == ["Ask Dr. Smith now."]


def test_a_long_cjk_clause_is_cut_at_its_comma() -> None:
    splitter = SentenceSplitter(max_chars=12, first_max_chars=12)
    assert splitter.feed("我们明天早上去公园散步，然后去吃早饭再回家") == [
        "我们明天早上去公园散步，"
    ]


def test_a_long_clause_is_cut_at_a_comma() -> None:
    splitter = SentenceSplitter(max_chars=40, first_max_chars=40)
    out = splitter.feed("When the sun goes down over the quiet hills, the birds sing and ")
    assert out == ["When the sun goes down over the quiet hills,"]


def test_the_first_piece_may_go_out_after_a_few_whole_words() -> None:
    splitter = SentenceSplitter(first_words=4)
    pieces = []
    for token in [
        "The",
        " sky",
        " on",
        " a",
        " clear",
        " day",
        " is",
        " blue",
        ".",
        " It",
        " is",
        " nice",
        ". ",
    ]:
        pieces += splitter.feed(token)
    assert pieces == ["The sky on a", "clear day is blue.", "It is nice."]


def test_a_short_first_sentence_is_not_cut() -> None:
    splitter = SentenceSplitter(first_words=6)
    assert splitter.feed("Sure thing! ") == ["Sure thing!"]


def test_the_first_piece_is_cut_early_so_speech_starts_sooner() -> None:
    splitter = SentenceSplitter(max_chars=160, first_max_chars=30)
    text = "The sky on a clear day is blue, with hues of pink and gold, and white clouds. "
    assert splitter.feed(text[:50]) == ["The sky on a clear day is blue,"]
    # Later pieces wait for the end of their sentence.
    assert splitter.feed(text[50:]) == ["with hues of pink and gold, and white clouds."]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_a_trial_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, reset_s=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    breaker.success()  # a success in between starts the count again
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_after() == pytest.approx(10)
    clock.now += 10
    assert breaker.allow()  # the one trial call
    assert not breaker.allow()  # others wait for its verdict
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_a_failed_trial_reopens_the_circuit() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_s=5, clock=clock)
    breaker.allow()
    breaker.failure()
    clock.now += 5
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and breaker.retry_after() == pytest.approx(5)


def test_a_trial_without_a_verdict_lets_the_next_call_try() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_s=1, clock=clock)
    breaker.allow()
    breaker.failure()
    clock.now += 1
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


@pytest.mark.parametrize(
    ("error", "idempotent", "retry"),
    [
        (ProviderError("rate_limited", "", retry_after=1), False, True),
        (ProviderError("rate_limited", "", retry_after=30), True, False),
        (ProviderError("unavailable", "", status=503), True, True),
        (ProviderError("unavailable", "", status=503), False, False),
        (ProviderError("unavailable", "", sent=False), False, True),
        (ProviderError("timeout", ""), True, True),
        (ProviderError("auth", "", status=401), True, False),
        (ProviderError("rejected", "", status=400), True, False),
    ],
)
def test_what_is_retried(error: ProviderError, idempotent: bool, retry: bool) -> None:
    assert error.retryable(idempotent, max_wait=2.0) is retry


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"error": {"message": "bad key", "type": "x"}}', "bad key"),
        (
            b'{"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}',
            "Invalid credentials.",
        ),
        (b'{"detail": {"status": "quota_exceeded", "message": "no quota"}}', "no quota"),
        (b'{"detail": [{"loc": ["body", "text"]}]}', '[{"loc": ["body", "text"]}]'),
        (b"upstream connect error", "upstream connect error"),
        (b"", "(empty body)"),
    ],
)
def test_vendor_error_bodies(body: bytes, text: str) -> None:
    assert error_text(body) == text


def test_keys_are_scrubbed_from_log_records(tmp_path: object) -> None:
    secrets = Secrets()
    key_file = __import__("pathlib").Path(str(tmp_path)) / "api-key"
    key_file.write_text("sk-very-secret-123\n")
    assert secrets.read(str(key_file), None) == "sk-very-secret-123"
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "vendor said %s", ("sk-very-secret-123 is wrong",), None
    )
    RedactingFilter(secrets).filter(record)
    assert record.getMessage() == "vendor said [redacted] is wrong"


def test_pcm_resampler_keeps_samples_whole_across_odd_chunks() -> None:
    pcm = (np.sin(np.arange(24_000) / 10) * 10_000).astype("<i2").tobytes()
    same = PcmResampler(24_000, 24_000)
    out = b"".join(same.feed(pcm[i : i + 777]) for i in range(0, len(pcm), 777)) + same.flush()
    assert out == pcm
    down = PcmResampler(24_000, 16_000)
    out = b"".join(down.feed(pcm[i : i + 777]) for i in range(0, len(pcm), 777)) + down.flush()
    assert len(out) % 2 == 0
    assert abs(len(out) // 2 - 16_000) <= 16
