"""Verdicts for real statuses: captured from the cluster tests (captured/, see its
README) and two the operator's planners wrote for an invalid spec (constructed/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import construct
import pytest
from luakit import health
from pydantic import ValidationError

from voice_operator.api.modelasset import ModelAssetSpec, ModelAssetStatus
from voice_operator.api.voiceagent import VoiceAgentSpec, VoiceAgentStatus

pytestmark = pytest.mark.unit

HERE = Path(__file__).parent
FIXTURES = {
    p.stem: p for d in ("captured", "constructed") for p in sorted((HERE / d).glob("*.json"))
}
MODELS: dict[str, tuple[Any, Any]] = {
    "VoiceAgent": (VoiceAgentSpec, VoiceAgentStatus),
    "ModelAsset": (ModelAssetSpec, ModelAssetStatus),
}
STILL_SERVES = "; the agent still serves"

EXPECTED = {
    "agent-ready": (
        "Healthy",
        "every stage and the gateway serve "
        "(stt internal whisper@v1, llm internal smollm@v1, tts internal joe@v1)",
    ),
    "agent-not-observed-yet": ("Progressing", "waiting for the operator to observe generation 1"),
    "agent-first-rollout": (
        "Progressing",
        "RollingOut: stt: rolling out stt revision b6abdb896d (internal whisper@v1)",
    ),
    "agent-gateway-starting": (
        "Progressing",
        "GatewayUnavailable: the gateway has no available pod yet",
    ),
    "agent-model-not-ready": (
        "Progressing",
        "ModelNotReady: llm: ModelAsset smollm (spec.llm.model) does not exist yet",
    ),
    "agent-rolling-out-while-serving": (
        "Progressing",
        "RollingOut: stt: rolling out stt revision 4bf823f7b8 (internal whisper@v2)",
    ),
    "agent-wrong-model-kind": (
        "Degraded",
        "ModelKindMismatch: stt: ModelAsset smollm is a llm model (gguf); "
        "spec.stt needs one of engine stt, format ggml or ct2",
    ),
    # Degraded at generation 1; the fix (generation 2) is not observed yet.
    "agent-spec-fixed-not-observed-yet": (
        "Progressing",
        "waiting for the operator to observe generation 2 (status is for generation 1)",
    ),
    "agent-secret-missing": (
        "Degraded",
        "SecretNotFound: tts: Secret eleven (spec.tts.external.apiKeySecretRef) does not exist"
        + STILL_SERVES,
    ),
    "agent-secret-key-missing": (
        "Degraded",
        "SecretKeyNotFound: tts: Secret eleven has no key xi-api-key "
        "(spec.tts.external.apiKeySecretRef.key)" + STILL_SERVES,
    ),
    "agent-rolled-back-deadline": (
        "Degraded",
        "ProgressDeadlineExceeded: stt: revision 52059d0627 failed (pods of revision "
        "52059d0627 did not become ready in time); rolled back to b6abdb896d" + STILL_SERVES,
    ),
    "agent-rolled-back-crash-loop": (
        "Degraded",
        "CrashLoop: tts: revision 10951b3c0f failed (pod support-tts-84d8c577b5-9lj7q: "
        "container tts restarted 5 times (CrashLoopBackOff)); rolled back to 51a8e353b9"
        + STILL_SERVES,
    ),
    "agent-failed-without-auto-rollback": (
        "Degraded",
        "ProgressDeadlineExceeded: stt: revision 52059d0627 failed (pods of revision "
        "52059d0627 did not become ready in time); autoRollback is off, so it stays as it is"
        + STILL_SERVES,
    ),
    "agent-invalid-spec": (
        "Degraded",
        "InvalidSpec: spec.stt: an internal provider needs model (a ModelAsset name)",
    ),
    "asset-not-observed-yet": ("Progressing", "waiting for the operator to observe generation 1"),
    "asset-job-created": ("Progressing", "JobCreated: downloading version v1"),
    "asset-downloading-new-version": ("Progressing", "Downloading: downloading version v2 (93%)"),
    "asset-ready": ("Healthy", "version v1 is ready"),
    "asset-bump-not-observed-yet": (
        "Progressing",
        "waiting for the operator to observe generation 2 (status is for generation 1)",
    ),
    "asset-failed-older-version-serves": (
        "Degraded",
        "ChecksumMismatch: spec.files[0] (joe.onnx): sha256 "
        "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06 of the 63201294 "
        "bytes downloaded does not match the expected " + "0" * 64 + "; still serving version v1",
    ),
    "asset-fix-not-observed-yet": (
        "Progressing",
        "waiting for the operator to observe generation 3 (status is for generation 2)",
    ),
    "asset-ready-after-fix": ("Healthy", "version v2 is verified"),
    "asset-invalid-spec": (
        "Degraded",
        "InvalidSpec: spec: spec.format gguf does not fit engine tts: use onnx; "
        "still serving version v1",
    ),
}


def load(name: str) -> dict[str, Any]:
    return json.loads(FIXTURES[name].read_text())


def test_every_fixture_has_an_expected_verdict():
    assert set(FIXTURES) == set(EXPECTED)


@pytest.mark.parametrize("flavour", ["lua51", "luajit21"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verdict_of_a_real_status(name: str, flavour: str):
    obj = load(name)
    status, message = EXPECTED[name]
    assert health(obj["kind"], obj, flavour) == {"status": status, "message": message}


def _inside(small: Any, big: Any) -> bool:
    """Every value of `small` is in `big` unchanged (extra defaults in `big` are fine)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and _inside(v, big[k]) for k, v in small.items()
        )
    if isinstance(small, list):
        return (
            isinstance(big, list)
            and len(small) == len(big)
            and all(_inside(a, b) for a, b in zip(small, big, strict=True))
        )
    return small == big


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_what_our_api_types_describe(name: str):
    obj = load(name)
    assert obj["apiVersion"] == "voiceops.dev/v1alpha1"
    spec_model, status_model = MODELS[obj["kind"]]
    if "status" in obj:
        # Status types ignore unknown fields; a field they dropped would show here.
        assert _inside(obj["status"], status_model.model_validate(obj["status"]).wire())
    if FIXTURES[name].parent.name == "constructed":
        with pytest.raises(ValidationError):  # invalid on purpose
            spec_model.model_validate(obj["spec"])
    else:
        spec_model.model_validate(obj["spec"])


def test_constructed_fixtures_are_what_the_planners_write_today():
    for name, obj in construct.build().items():
        assert FIXTURES[name].read_text() == construct.dump(obj), (
            f"{name}: run python tests/argocd/construct.py"
        )
