"""Each wire between the operator and its programs, written by the operator's own builders
and read by the program's own reader: a change on one side fails here, with no cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from ready_assets import file_asset_spec, ready_asset

from voice_contracts.fetch import PERMANENT_EXIT_CODES, ExitCode, Reason, exit_code_for, load_spec
from voice_contracts.layout import version_path
from voice_contracts.routes import parse_routes
from voice_engines.gateway.settings import GatewaySettings
from voice_engines.llm.settings import LlmEngineSettings
from voice_engines.stt.settings import SttEngineSettings
from voice_engines.tts.settings import TtsEngineSettings
from voice_fetch.manifest import FileRecord
from voice_fetch.report import DownloadState, status_patch
from voice_operator.api.modelasset import ModelAssetSpec, ModelAssetStatus
from voice_operator.api.voiceagent import COMPONENTS, ComponentRevision, VoiceAgentSpec
from voice_operator.observe import asset_view
from voice_operator.plan.revisions import desired_revision
from voice_operator.render.meta import Owner
from voice_operator.render.modelasset import Asset, desired_fetch_job
from voice_operator.render.voiceagent import (
    Agent,
    desired_gateway_deployment,
    desired_routes,
    engine_env,
)
from voice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit
SETTINGS = OperatorSettings()
ASSETS = {
    "whisper": ("stt", "ggml", "model.bin"),
    "smollm": ("llm", "gguf", "m.gguf"),
    "joe": ("tts", "onnx", "joe.onnx"),
}
SPEC = VoiceAgentSpec.model_validate(
    {
        "stt": {"model": "whisper", "settings": {"language": "de", "temperature": 0.2}},
        "llm": {"model": "smollm", "settings": {"maxTokens": 64, "systemPrompt": "Be brief."}},
        "tts": {"model": "joe", "settings": {"speed": 1.25}},
    }
)
AGENT = Agent(Owner("VoiceAgent", "support", "voice", "uid-1"), SPEC)


def _revisions() -> dict[str, ComponentRevision]:
    views = {
        n: asset_view(ready_asset(n, file_asset_spec(*a[:2], a[2]), a[2]))
        for n, a in ASSETS.items()
    }
    revisions = {}
    for c in COMPONENTS:
        rev = desired_revision(c, SPEC.component(c), views, {}, SETTINGS)
        assert isinstance(rev, ComponentRevision), rev
        revisions[c] = rev
    return revisions


def _environment(container: dict[str, Any], **secrets: str) -> dict[str, str]:
    """The container's environment as the kubelet hands it over (valueFrom resolved)."""
    env = {}
    for item in container["env"]:
        env[item["name"]] = item["value"] if "value" in item else secrets[item["name"]]
    return env


def test_the_gateway_reads_the_routes_the_operator_writes() -> None:
    revisions = _revisions()
    configmap = desired_routes(AGENT, dict(revisions))
    routes = parse_routes(configmap["data"]["routes.json"])
    stt, llm, tts = (routes.route(c) for c in COMPONENTS)
    assert stt and llm and tts
    assert stt.url == "http://support-stt.voice.svc:8080"
    assert stt.revision == revisions["stt"].revision
    assert (stt.settings.language, stt.settings.temperature) == ("de", 0.2)  # type: ignore[union-attr]
    assert (llm.settings.max_tokens, llm.settings.system_prompt) == (64, "Be brief.")  # type: ignore[union-attr]
    assert tts.settings.speed == 1.25  # type: ignore[union-attr]
    assert routes.agent == "support"


@pytest.mark.parametrize(
    ("component", "settings_class"),
    [("stt", SttEngineSettings), ("llm", LlmEngineSettings), ("tts", TtsEngineSettings)],
)
def test_each_engine_reads_the_environment_the_operator_renders(
    component: str, settings_class: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    rev = _revisions()[component]
    for item in engine_env(component, rev):  # type: ignore[arg-type]
        monkeypatch.setenv(item["name"], item["value"])
    settings = settings_class()
    path = rev.model_path
    if component == "stt":
        assert (settings.stt_model_path, settings.stt_language) == (path, "de")
        assert settings.stt_temperature == 0.2
    elif component == "llm":
        assert (settings.llm_model_path, settings.llm_max_tokens) == (path, 64)
        assert settings.system_prompt == "Be brief."
    else:
        assert (settings.tts_voice_path, settings.tts_speed) == (path, 1.25)
        assert settings.voice_name == "joe"


def test_the_gateway_reads_the_environment_the_operator_renders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment = desired_gateway_deployment(AGENT, {}, 1, SETTINGS)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for name, value in _environment(container).items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    assert settings.gateway_agent == "support"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(settings.routes_path.parent) == mounts["routes"]


def test_the_gateway_reads_the_turn_detection_the_operator_writes() -> None:
    spec = SPEC.model_copy(
        update={
            "gateway": SPEC.gateway.model_validate(
                {"turnDetection": {"silenceMs": 700, "minSpeechMs": 300, "bargeIn": False}}
            )
        }
    )
    configmap = desired_routes(Agent(AGENT.owner, spec), dict(_revisions()))
    turns = parse_routes(configmap["data"]["routes.json"]).gateway.turn_detection
    assert (turns.mode, turns.silence_ms, turns.min_speech_ms) == ("vad", 700, 300)
    assert (turns.max_utterance_ms, turns.barge_in, turns.interim_ms) == (30000, False, 600)


def test_a_routes_file_without_turn_detection_is_manual() -> None:
    """An older operator's file: the gateway keeps the explicit end-of-utterance message."""
    assert parse_routes('{"stages": {}}').gateway.turn_detection.mode == "manual"


def test_the_gateway_reads_its_auth_and_cors_from_what_the_operator_renders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = SPEC.gateway.model_validate(
        {
            "service": {"type": "LoadBalancer"},
            "auth": {"secretName": "gateway-keys"},
            "tokenTtlSeconds": 120,
            "corsOrigins": ["https://app.example", "http://localhost:3000"],
        }
    )
    agent = Agent(AGENT.owner, SPEC.model_copy(update={"gateway": gateway}))
    deployment = desired_gateway_deployment(agent, {}, 1, SETTINGS)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for name, value in _environment(container).items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert settings.gateway_auth_keys_dir == mounts["auth"]
    assert settings.gateway_token_ttl == 120
    assert settings.gateway_cors_origins == "https://app.example,http://localhost:3000"
    volumes = {v["name"]: v for v in pod["volumes"]}
    # By reference: the keys themselves are nowhere in what the operator writes.
    assert volumes["auth"]["secret"] == {"secretName": "gateway-keys", "optional": True}


def test_an_agent_without_auth_keeps_its_gateway_environment() -> None:
    (container,) = desired_gateway_deployment(AGENT, {}, 1, SETTINGS)["spec"]["template"]["spec"][
        "containers"
    ]
    names = {item["name"] for item in container["env"]}
    assert not names & {"GATEWAY_AUTH_KEYS_DIR", "GATEWAY_TOKEN_TTL", "GATEWAY_CORS_ORIGINS"}
    assert "auth" not in {m["name"] for m in container["volumeMounts"]}


def test_an_exposed_gateway_needs_auth() -> None:
    with pytest.raises(ValueError, match=r"spec\.gateway\.auth is required"):
        SPEC.gateway.model_validate({"service": {"type": "NodePort"}})


def _asset(**spec: Any) -> Asset:
    body = {
        "engine": "tts",
        "format": "onnx",
        "version": "v2",
        "files": [
            {"url": "https://models.example/joe.onnx", "sha256": "a" * 64, "path": "joe.onnx"},
            {"url": "https://models.example/j.json", "sha256": "b" * 64, "path": "joe.onnx.json"},
        ],
        "storage": {"size": "1Gi"},
        **spec,
    }
    return Asset(Owner("ModelAsset", "joe", "voice", "uid-2"), ModelAssetSpec.model_validate(body))


def test_the_fetcher_reads_the_job_the_operator_renders() -> None:
    asset = _asset(auth={"secretRef": {"name": "hub", "key": "token"}, "header": "X-Token"})
    job = desired_fetch_job(asset, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    spec = load_spec(_environment(container, FETCH_AUTH_HEADER="secret-value"))
    assert (spec.asset, spec.namespace, spec.version) == ("joe", "voice", "v2")
    assert str(spec.dest) == version_path("joe", "v2")
    assert [f.path for f in spec.files] == ["joe.onnx", "joe.onnx.json"]
    assert spec.auth_header_name == "X-Token"
    assert spec.auth_header_value and spec.auth_header_value.get_secret_value() == "secret-value"
    assert spec.report == "kube"
    # The volume the Job mounts is where the fetcher writes.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(spec.dest).startswith(mounts["models"] + "/")


def test_the_fetcher_reads_hub_and_s3_sources_with_their_secrets_by_reference() -> None:
    asset = _asset(
        files=[
            {"url": "hf://rhasspy/piper-voices@v1/en/joe.onnx", "sha256": "a" * 64,
             "path": "joe.onnx"},
            {"url": "s3://models/joe.onnx.json", "sha256": "b" * 64, "path": "joe.onnx.json"},
        ],
        huggingFace={"tokenSecretRef": {"name": "hf", "key": "token"},
                     "endpoint": "http://hub-mirror.models:8080"},
        s3={"endpoint": "http://minio.storage:9000", "region": "eu-1", "pathStyle": True,
            "credentialsSecretRef": {"name": "s3", "accessKeyIdKey": "id"}},
    )  # fmt: skip
    (container,) = desired_fetch_job(asset, SETTINGS)["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs == {
        "FETCH_HF_TOKEN": {"name": "hf", "key": "token"},
        "FETCH_S3_ACCESS_KEY_ID": {"name": "s3", "key": "id"},
        "FETCH_S3_SECRET_ACCESS_KEY": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"},
    }
    spec = load_spec(
        _environment(
            container,
            FETCH_HF_TOKEN="hf_abc",
            FETCH_S3_ACCESS_KEY_ID="key-id",
            FETCH_S3_SECRET_ACCESS_KEY="key-secret",
        )
    )
    assert [f.scheme for f in spec.files] == ["hf", "s3"]
    assert spec.hf_endpoint == "http://hub-mirror.models:8080"
    assert spec.hf_token and spec.hf_token.get_secret_value() == "hf_abc"
    assert (spec.s3_endpoint, spec.s3_region, spec.s3_path_style) == (
        "http://minio.storage:9000",
        "eu-1",
        True,
    )
    assert spec.s3_access_key_id and spec.s3_access_key_id.get_secret_value() == "key-id"
    assert spec.s3_secret_access_key
    assert spec.s3_secret_access_key.get_secret_value() == "key-secret"


def test_the_job_fails_at_once_exactly_on_the_fetchers_permanent_exit_codes() -> None:
    job = desired_fetch_job(_asset(), SETTINGS)
    rule = next(r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob")
    assert rule["onExitCodes"]["values"] == [int(code) for code in PERMANENT_EXIT_CODES]
    retried = {
        Reason.HTTP_ERROR,
        Reason.STALLED,
        Reason.CONNECTION_ERROR,
        Reason.INTERNAL_ERROR,
        Reason.OLLAMA_PULL_FAILED,
    }
    for reason in Reason:
        assert (exit_code_for(reason) in PERMANENT_EXIT_CODES) == (reason not in retried), reason
    assert ExitCode.TERMINATED not in PERMANENT_EXIT_CODES


def test_the_operator_reads_the_report_the_fetcher_sends() -> None:
    state = DownloadState(
        "Verified", "Verified", "2 files", 10, 10, (FileRecord("joe.onnx", "a" * 64, 10),)
    )
    patch = status_patch("v2", state, datetime(2026, 12, 2, 1, 0, 0, 123456, tzinfo=UTC))
    status = ModelAssetStatus.model_validate(patch["status"])
    report = status.downloads["v2"]
    assert (report.phase, report.done_bytes, report.total_bytes) == ("Verified", 10, 10)
    assert report.files and report.files[0].path == "joe.onnx"
    assert report.updated_at == datetime(2026, 12, 2, 1, 0, 0, tzinfo=UTC)
