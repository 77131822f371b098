"""The VoiceAgent plan: children in a safe order, conditions, keys only by reference."""

from __future__ import annotations

import datetime
import json

import pytest
from ready_assets import file_asset_spec, ready_asset

from voice_operator.api.voiceagent import VoiceAgentSpec
from voice_operator.observe import AgentObservation, SecretPresence, asset_view, observe_agent
from voice_operator.plan.revisions import desired_revision
from voice_operator.plan.rollout import revision_of
from voice_operator.plan.voiceagent import plan_voice_agent
from voice_operator.render.meta import Owner
from voice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit
NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)
OWNER = Owner("VoiceAgent", "support", "voice", "uid-9")
SETTINGS = OperatorSettings()
FORMATS = {
    "whisper": ("stt", "ggml", "model.bin"),
    "smollm": ("llm", "gguf", "m.gguf"),
    "joe": ("tts", "onnx", "joe.onnx"),
}


def asset(name: str, version: str = "v1") -> dict:
    engine, fmt, main = FORMATS[name]
    return ready_asset(name, file_asset_spec(engine, fmt, main, version), main)


def spec(**stages) -> dict:
    s = {"stt": {"model": "whisper"}, "llm": {"model": "smollm"}, "tts": {"model": "joe"}}
    s.update(stages)
    return s


def observe(
    s: dict,
    status: dict | None = None,
    *,
    assets=None,
    secrets=None,
    deployments=None,
    autoscaled=frozenset(),
) -> AgentObservation:
    return observe_agent(
        owner=OWNER,
        generation=1,
        spec=s,
        status=status or {},
        assets=assets if assets is not None else {n: asset(n) for n in FORMATS},
        secrets=secrets or {},
        deployments=deployments or {},
        pods=[],
        autoscaled=autoscaled,
        probes={},
        now=NOW,
    )


def names(plan) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in plan.apply]


def test_a_new_agent_gets_engines_then_routes_then_the_gateway():
    p = plan_voice_agent(observe(spec()), SETTINGS)
    assert names(p) == [
        "Deployment/support-stt",
        "Service/support-stt",
        "Deployment/support-llm",
        "Service/support-llm",
        "Deployment/support-tts",
        "Service/support-tts",
        "ConfigMap/support-routes",
        "Deployment/support-gateway",
        "Service/support-gateway",
    ]
    routes = json.loads(p.apply[6]["data"]["routes.json"])
    assert routes["stages"] == {"stt": None, "llm": None, "tts": None}  # nothing is up yet
    ready = p.status_patch["status"]["conditions"][0]
    assert (ready["type"], ready["status"]) == ("Ready", "False")


def test_engine_env_comes_from_the_asset_version_and_the_settings():
    p = plan_voice_agent(
        observe(
            spec(
                llm={
                    "model": "smollm",
                    "settings": {
                        "maxTokens": 64,
                        "systemPrompt": "Be brief: answer in one line.\nNo lists.",
                    },
                }
            )
        ),
        SETTINGS,
    )
    llm = p.apply[2]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in llm["env"]}
    assert env["LLM_BACKEND"] == "llamacpp"
    assert env["LLM_MODEL_PATH"] == "/models/smollm/v1/m.gguf"
    assert env["LLM_MAX_TOKENS"] == "64"
    # A colon and a newline in a value survive the template intact.
    assert env["LLM_SYSTEM_PROMPT"] == "Be brief: answer in one line.\nNo lists."


def test_autoscaled_deployments_get_no_replicas_from_us():
    p = plan_voice_agent(observe(spec(), autoscaled=frozenset({"support-llm"})), SETTINGS)
    deployments = {o["metadata"]["name"]: o for o in p.apply if o["kind"] == "Deployment"}
    assert "replicas" not in deployments["support-llm"]["spec"]
    assert deployments["support-stt"]["spec"]["replicas"] == 1


def test_missing_asset_is_progressing_and_a_wrong_one_is_degraded():
    p = plan_voice_agent(
        observe(spec(), assets={"whisper": asset("whisper"), "joe": asset("joe")}), SETTINGS
    )
    conditions = {c["type"]: c for c in p.status_patch["status"]["conditions"]}
    assert (conditions["Progressing"]["status"], conditions["Progressing"]["reason"]) == (
        "True",
        "ModelNotReady",
    )
    assert conditions["Degraded"]["status"] == "False"
    assert "Deployment/support-llm" not in names(p)

    p = plan_voice_agent(observe(spec(stt={"model": "smollm"})), SETTINGS)
    conditions = {c["type"]: c for c in p.status_patch["status"]["conditions"]}
    assert (conditions["Degraded"]["status"], conditions["Degraded"]["reason"]) == (
        "True",
        "ModelKindMismatch",
    )


def test_external_stage_key_is_mounted_by_reference_only():
    external = {
        "provider": "external",
        "external": {"vendor": "deepgram", "apiKeySecretRef": {"name": "dg", "key": "token"}},
    }
    p = plan_voice_agent(
        observe(spec(stt=external), secrets={"dg": SecretPresence(True, frozenset({"token"}))}),
        SETTINGS,
    )
    assert "Deployment/support-stt" not in names(p)
    gateway = next(o for o in p.apply if o["metadata"]["name"] == "support-gateway")
    keys = next(v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys")
    assert keys["projected"]["sources"][0]["secret"] == {
        "name": "dg",
        "optional": True,
        "items": [{"key": "token", "path": "stt/api-key"}],
    }
    # The gateway has not rolled out the mount yet: the route waits for it.
    routes = json.loads(next(o for o in p.apply if o["kind"] == "ConfigMap")["data"]["routes.json"])
    assert routes["stages"]["stt"] is None


def test_invalid_spec_is_reported_without_touching_children():
    p = plan_voice_agent(observe(spec(stt={"provider": "internal"})), SETTINGS)
    assert p.apply == []
    degraded = p.status_patch["status"]["conditions"][0]
    assert (degraded["reason"], degraded["message"]) == (
        "InvalidSpec",
        "spec.stt: an internal provider needs model (a ModelAsset name)",
    )


def _routes(plan) -> dict:
    return json.loads(
        next(o for o in plan.apply if o["kind"] == "ConfigMap")["data"]["routes.json"]
    )["stages"]


def _key_sources(plan) -> list[dict]:
    gateway = next(o for o in plan.apply if o["metadata"]["name"] == "support-gateway")
    keys = next(v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys")
    return keys["projected"]["sources"]


def _serving_stt(s: dict) -> tuple[dict, dict]:
    """A status and a Deployment in which the stt stage serves its desired revision."""
    revision = desired_revision(
        "stt",
        VoiceAgentSpec.model_validate(s).stt,
        {n: asset_view(asset(n)) for n in FORMATS},
        {},
        SETTINGS,
    )
    rev = revision_of(revision)
    status = {"components": {"stt": {"lastGoodRevision": rev, "lastGood": revision.wire()}}}
    deployment = {
        "metadata": {"generation": 1},
        "spec": {
            "replicas": 1,
            "template": {"metadata": {"annotations": {"voiceops.dev/revision": rev}}},
        },
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
        },
    }
    return status, {"stt": deployment}


def test_a_fallback_vendor_is_routed_once_its_key_exists():
    fallback = {
        "vendor": "deepgram",
        "model": "nova-3",
        "apiKeySecretRef": {"name": "dg", "key": "token"},
    }
    s = spec(stt={"model": "whisper", "fallback": fallback})
    status, deployments = _serving_stt(s)
    p = plan_voice_agent(observe(s, status, deployments=deployments), SETTINGS)
    assert _key_sources(p)[0]["secret"]["items"] == [
        {"key": "token", "path": "stt-fallback/api-key"}
    ]
    assert "fallback" not in _routes(p)["stt"]  # no Secret yet: no route to a missing key
    present = {"dg": SecretPresence(True, frozenset({"token"}))}
    p = plan_voice_agent(observe(s, status, deployments=deployments, secrets=present), SETTINGS)
    assert _routes(p)["stt"]["fallback"] == {
        "provider": "external",
        "vendor": "deepgram",
        "model": "nova-3",
        "url": None,
        "voice": None,
        "secretRef": {"name": "dg", "key": "token"},
        "apiKeyFile": "/var/run/secrets/voiceops/stt-fallback/api-key",
        "revision": _routes(p)["stt"]["fallback"]["revision"],
        "settings": {"threads": 2, "temperature": 0, "language": "en"},
    }
    assert _routes(p)["stt"]["provider"] == "internal"


def test_the_serving_vendor_key_stays_mounted_while_switching_back_to_internal():
    external = {
        "provider": "external",
        "external": {"vendor": "groq", "apiKeySecretRef": {"name": "groq", "key": "api-key"}},
    }
    status = {
        "components": {
            "llm": {
                "provider": "external",
                "lastGoodRevision": "x",
                "lastGood": {"provider": "external", **external},
            }
        }
    }
    p = plan_voice_agent(observe(spec(), status), SETTINGS)
    paths = [i["path"] for src in _key_sources(p) for i in src["secret"]["items"]]
    assert paths == ["llm/api-key"]


def _failed(a: dict, version: str, current: bool) -> dict:
    """`a` with spec.version bumped to a version whose download failed."""
    status = {
        **(a["status"] if current else {}),
        "conditions": [
            {"type": "Failed", "status": "True", "reason": "ChecksumMismatch", "message": "x"}
        ],
    }
    return {
        "metadata": {"name": "whisper"},
        "spec": {**a["spec"], "version": version},
        "status": status,
    }


def test_a_failed_model_version_is_degraded_while_the_old_one_serves():
    assets = {n: asset(n) for n in FORMATS} | {"whisper": _failed(asset("whisper"), "v2", True)}
    p = plan_voice_agent(observe(spec(), assets=assets), SETTINGS)
    conditions = {c["type"]: c for c in p.status_patch["status"]["conditions"]}
    degraded = conditions["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "ModelVersionFailed")
    assert "whisper version v2 failed (ChecksumMismatch); still serving v1" in degraded["message"]
    stt = next(o for o in p.apply if o["metadata"]["name"] == "support-stt")
    env = {e["name"]: e["value"] for e in stt["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "/whisper/v1/" in env["STT_MODEL_PATH"]


def test_a_first_version_that_failed_is_degraded_not_waiting_forever():
    assets = {n: asset(n) for n in FORMATS} | {"whisper": _failed(asset("whisper"), "v1", False)}
    p = plan_voice_agent(observe(spec(), assets=assets), SETTINGS)
    conditions = {c["type"]: c for c in p.status_patch["status"]["conditions"]}
    assert (conditions["Degraded"]["status"], conditions["Degraded"]["reason"]) == (
        "True",
        "ModelVersionFailed",
    )
    assert conditions["Progressing"]["reason"] != "ModelNotReady"  # others are rolling out
    assert "Deployment/support-stt" not in names(p)
