"""The longest names the CRDs accept still make valid children: every name the operator
derives, every label value carrying it and every Job's job-name label stay within 63."""

from __future__ import annotations

import re

import pytest

from voice_operator.api import modelasset, voiceagent
from voice_operator.api.common import DNS_1035_LABEL, POD_ANNOTATIONS_MAX_BYTES
from voice_operator.api.modelasset import ModelAssetSpec
from voice_operator.api.voiceagent import COMPONENTS, ComponentRevision, VoiceAgentSpec
from voice_operator.render.meta import Owner
from voice_operator.render.modelasset import (
    Asset,
    desired_claim,
    desired_fetch_identity,
    desired_fetch_job,
    desired_prune_job,
)
from voice_operator.render.voiceagent import (
    Agent,
    desired_engine_deployment,
    desired_gateway_deployment,
    desired_routes,
    desired_service,
    engine_url,
    gateway_url,
)
from voice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit
SETTINGS = OperatorSettings()
LONGEST_AGENT = "a" * voiceagent.MAX_NAME_LENGTH
LONGEST_ASSET = "m" * modelasset.MAX_NAME_LENGTH
# The Kubernetes limit on a pod's annotations, keys and values together.
POD_ANNOTATIONS_LIMIT = 256 * 1024


def longest_asset(**spec: object) -> Asset:
    full = {
        "engine": "tts",
        "format": "onnx",
        "version": "v" * 63,
        "files": [
            {"url": "https://h/joe.onnx", "sha256": "a" * 64, "path": "joe.onnx"},
            {"url": "https://h/joe.onnx.json", "sha256": "b" * 64, "path": "joe.onnx.json"},
        ],
        "storage": {"size": "1Gi"},
        **spec,
    }
    owner = Owner("ModelAsset", LONGEST_ASSET, "n" * 63, "uid-1")
    return Asset(owner, ModelAssetSpec.model_validate(full))


def asset_children() -> list[dict]:
    asset = longest_asset()
    ollama = longest_asset(engine="llm", format="ollama", files=None, ollama={"model": "x:1b"})
    claim = desired_claim(asset)
    assert claim is not None
    return [
        claim,
        *desired_fetch_identity(asset),
        desired_fetch_job(asset, SETTINGS),
        desired_fetch_job(ollama, SETTINGS),
        desired_prune_job(asset, ["v1", "v2"], SETTINGS),
    ]


def internal_revision(annotations: dict[str, str] | None = None) -> ComponentRevision:
    return ComponentRevision(
        provider="internal",
        model=LONGEST_ASSET,
        model_version="v" * 63,
        model_format="ollama",
        model_path=f"/models/{LONGEST_ASSET}/v1/",
        claim_name=f"{LONGEST_ASSET}-models",
        ollama_model="x:1b",
        ollama_image="ollama/ollama",
        image="engine",
        pod_annotations=annotations or {},
    )


def longest_agent() -> Agent:
    stage = {"model": LONGEST_ASSET}
    spec = VoiceAgentSpec.model_validate({"stt": stage, "llm": stage, "tts": stage})
    return Agent(Owner("VoiceAgent", LONGEST_AGENT, "n" * 63, "uid-2"), spec)


def agent_children() -> list[dict]:
    agent = longest_agent()
    rev = internal_revision()
    keys = {"stt": {"name": "key", "key": "k"}, "stt-fallback": {"name": "key", "key": "k"}}
    children = [desired_routes(agent, dict.fromkeys(COMPONENTS, rev))]
    for component in COMPONENTS:
        children.append(desired_engine_deployment(agent, component, rev, 1, SETTINGS))
        children.append(desired_service(agent, component))
    children.append(desired_gateway_deployment(agent, keys, 1, SETTINGS))
    children.append(desired_service(agent, "gateway", 8080, "ClusterIP"))
    return children


def label_values(obj: dict) -> list[str]:
    values = list(obj["metadata"].get("labels", {}).values())
    spec = obj.get("spec", {})
    values += spec.get("template", {}).get("metadata", {}).get("labels", {}).values()
    values += spec.get("selector", {}).get("matchLabels", {}).values()
    return values


@pytest.mark.parametrize(
    "children", [asset_children, agent_children], ids=["ModelAsset", "VoiceAgent"]
)
def test_the_longest_allowed_name_makes_valid_children(children):
    objects = children()
    for obj in objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 63, f"{obj['kind']} {name} has {len(name)} characters"
        # What a Service name must be on every apiserver, the strictest of our children's.
        assert re.fullmatch(DNS_1035_LABEL, name), name
        for value in label_values(obj):
            assert len(value) <= 63, f"{obj['kind']} {name}: label value {value}"
    # The Job controller labels a Job's pods with job-name: <the Job's name>.
    for job in (o for o in objects if o["kind"] == "Job"):
        assert len(job["metadata"]["name"]) <= 63
    # The limit is what the longest child needs, not less.
    assert max(len(o["metadata"]["name"]) for o in objects) == 63


def test_in_cluster_urls_of_the_longest_agent_are_valid_host_names():
    agent = longest_agent()
    for url in [
        gateway_url(agent),
        *(engine_url(agent.name, agent.namespace, c) for c in COMPONENTS),
    ]:
        host = url.split("//")[1].split(":")[0]
        assert all(len(label) <= 63 for label in host.split(".")), host
        assert len(host) <= 253


def test_full_pod_annotations_and_ours_fit_the_pod_limit():
    """A stage's podAnnotations at the schema's limit, plus the revision and Prometheus
    annotations the operator adds, stay within what Kubernetes allows a pod."""
    key = "k" * 63
    annotations = {key: "v" * (POD_ANNOTATIONS_MAX_BYTES - len(key))}
    deployment = desired_engine_deployment(
        longest_agent(), "stt", internal_revision(annotations), 1, SETTINGS
    )
    pod = deployment["spec"]["template"]["metadata"]["annotations"]
    assert len(pod) > len(annotations)
    assert sum(len(k.encode()) + len(v.encode()) for k, v in pod.items()) <= POD_ANNOTATIONS_LIMIT
