"""What the operator was configured with reaches every pod it creates (pull secrets,
placement), what an agent's spec says reaches its own pods (gateway annotations, the Ollama
sidecar's resources), and nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from voice_operator.api.common import GATEWAY_POD_ANNOTATIONS_MAX_BYTES
from voice_operator.api.modelasset import ModelAssetSpec
from voice_operator.api.voiceagent import ComponentRevision, VoiceAgentSpec
from voice_operator.render.meta import Owner
from voice_operator.render.modelasset import Asset, desired_fetch_job, desired_prune_job
from voice_operator.render.voiceagent import (
    OLLAMA_PROXY_REQUESTS,
    Agent,
    desired_engine_deployment,
    desired_gateway_deployment,
)
from voice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

PULLING = OperatorSettings(image_pull_secrets=["regcred", "mirror.example"])
STAGE = {"model": "m"}


def agent(**gateway: Any) -> Agent:
    spec = VoiceAgentSpec.model_validate(
        {"stt": STAGE, "llm": STAGE, "tts": STAGE, "gateway": gateway}
    )
    return Agent(Owner("VoiceAgent", "support", "voice", "uid-1"), spec)


def revision(model_format: str = "ggml", resources: dict[str, Any] | None = None):
    return ComponentRevision(
        provider="internal",
        model="m",
        model_version="v1",
        model_format=model_format,
        model_path="/models/m/v1/",
        claim_name="m-models",
        ollama_model="x:1b" if model_format == "ollama" else None,
        ollama_image="ollama/ollama" if model_format == "ollama" else None,
        image="engine",
        resources=resources,
    )


def asset() -> Asset:
    spec = ModelAssetSpec.model_validate(
        {
            "engine": "stt",
            "format": "ggml",
            "version": "v1",
            "files": [{"url": "https://h/m.bin", "sha256": "a" * 64, "path": "m.bin"}],
            "storage": {"size": "1Gi"},
        }
    )
    return Asset(Owner("ModelAsset", "m", "voice", "uid-2"), spec)


def every_pod(settings: OperatorSettings) -> dict[str, dict[str, Any]]:
    """Each kind of pod the operator creates, by what it is."""
    objects = {
        "stt": desired_engine_deployment(agent(), "stt", revision(), 1, settings),
        "llm-ollama": desired_engine_deployment(agent(), "llm", revision("ollama"), 1, settings),
        "gateway": desired_gateway_deployment(agent(), {}, 1, settings),
        "fetch-job": desired_fetch_job(asset(), settings),
        "prune-job": desired_prune_job(asset(), ["v0"], settings),
    }
    return {what: obj["spec"]["template"]["spec"] for what, obj in objects.items()}


def test_every_pod_the_operator_creates_pulls_with_the_configured_secrets():
    for what, pod in every_pod(PULLING).items():
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror.example"}], what


def test_without_pull_secrets_no_pod_names_one():
    for what, pod in every_pod(OperatorSettings()).items():
        assert pod["imagePullSecrets"] is None, what  # unset, as apply reads null


def test_a_pull_secret_that_is_no_secret_name_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv("VOICE_OPERATOR_IMAGE_PULL_SECRETS", '["Reg_Cred"]')
    with pytest.raises(ValidationError, match=r"image_pull_secrets\.0"):
        OperatorSettings()


def test_pull_secrets_come_from_the_environment_the_chart_sets(monkeypatch):
    monkeypatch.setenv("VOICE_OPERATOR_IMAGE_PULL_SECRETS", '["regcred"]')
    assert OperatorSettings().image_pull_secrets == ["regcred"]


def test_gateway_pods_carry_the_specs_annotations_beside_the_scrape_hints():
    pod = desired_gateway_deployment(
        agent(podAnnotations={"sidecar.istio.io/inject": "true"}), {}, 1, OperatorSettings()
    )["spec"]["template"]["metadata"]
    assert pod["annotations"]["sidecar.istio.io/inject"] == "true"
    assert pod["annotations"]["prometheus.io/scrape"] == "true"


def test_a_bad_gateway_annotation_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match=r"gateway\.podAnnotations"):
        agent(podAnnotations={"bad key!": "x"})


def test_the_ollama_sidecar_gets_the_stages_resources_and_the_relay_a_small_request():
    resources = {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    pod = desired_engine_deployment(
        agent(), "llm", revision("ollama", resources), 1, OperatorSettings()
    )["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in pod["containers"]}
    assert by_name["ollama"]["resources"] == resources
    assert by_name["llm"]["resources"] == {"requests": OLLAMA_PROXY_REQUESTS}


def test_without_resources_the_ollama_sidecar_gets_the_llm_default():
    pod = desired_engine_deployment(agent(), "llm", revision("ollama"), 1, OperatorSettings())
    by_name = {c["name"]: c for c in pod["spec"]["template"]["spec"]["containers"]}
    assert by_name["ollama"]["resources"] == {"requests": {"cpu": "2", "memory": "2Gi"}}


def test_an_embedded_engine_keeps_the_stages_resources():
    resources = {"requests": {"cpu": "3"}}
    pod = desired_engine_deployment(
        agent(), "llm", revision("gguf", resources), 1, OperatorSettings()
    )
    [container] = pod["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == resources


def test_gateway_annotations_are_bounded_lower_than_a_stages():
    agent(podAnnotations={"a": "x" * (GATEWAY_POD_ANNOTATIONS_MAX_BYTES - 1)})
    with pytest.raises(ValidationError, match="more than 16384"):
        agent(podAnnotations={"a": "x" * GATEWAY_POD_ANNOTATIONS_MAX_BYTES})


def engine_env(component: str, settings: dict[str, Any]) -> dict[str, str]:
    rev = revision().model_copy(update={"settings": settings})
    deployment = desired_engine_deployment(agent(), component, rev, 1, OperatorSettings())  # type: ignore[arg-type]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_device_settings_reach_the_engines_environment():
    assert engine_env("stt", {"device": "cuda"})["STT_DEVICE"] == "cuda"
    llm = engine_env("llm", {"device": "cuda", "gpuLayers": 24})
    assert (llm["LLM_DEVICE"], llm["LLM_GPU_LAYERS"]) == ("cuda", "24")


def test_unset_device_settings_leave_the_environment_as_it_was():
    """No new variable, so an operator upgrade does not roll every engine."""
    assert not {"STT_DEVICE"} & engine_env("stt", {}).keys()
    assert not {"LLM_DEVICE", "LLM_GPU_LAYERS"} & engine_env("llm", {}).keys()


def test_a_device_that_is_none_of_auto_cpu_cuda_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match=r"stt\.settings\.device"):
        VoiceAgentSpec.model_validate(
            {"stt": {**STAGE, "settings": {"device": "gpu"}}, "llm": STAGE, "tts": STAGE}
        )
