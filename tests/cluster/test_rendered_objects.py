"""Every kind of object the plans render, applied for real (server-side apply, no dry run)
to the control plane, in a namespace that enforces the restricted Pod Security Standard:
the variants the operator's own scenarios never reach (an Ollama LLM with its sidecar, an
Ollama pull Job, a PVC with a storage class and ReadWriteMany, a prune Job, a gateway
holding vendor and fallback keys, with pull Secrets, gateway annotations and the Ollama
sidecar's own resources) are accepted, and their pods are admitted and run."""

from __future__ import annotations

import datetime

import pytest
from ready_assets import ready_asset
from testground import KWOK_TAINT, Cluster
from testground.harness import wait_for

from voice_operator.api.modelasset import ModelAssetSpec
from voice_operator.kube import Kube
from voice_operator.observe import SecretPresence, observe_agent, observe_asset
from voice_operator.plan.modelasset import plan_model_asset
from voice_operator.plan.voiceagent import plan_voice_agent
from voice_operator.render.meta import Owner
from voice_operator.render.modelasset import Asset, desired_prune_job
from voice_operator.settings import OperatorSettings

pytestmark = pytest.mark.cluster

NOW = datetime.datetime.now(datetime.UTC)
SETTINGS = OperatorSettings(
    engine_node_selector={"type": "kwok"},
    engine_tolerations=[{**KWOK_TAINT, "operator": "Equal"}],
    image_pull_secrets=["regcred"],
)
PULL_SECRETS = [{"name": "regcred"}]
OLLAMA_ASSET = {
    "engine": "llm",
    "format": "ollama",
    "version": "v1",
    "ollama": {"model": "smollm2:135m"},
    "storage": {
        "size": "1Gi",
        "storageClassName": "standard",  # the test ground's provisioner
        "accessModes": ["ReadWriteMany"],
    },
}
FILE_ASSET = {
    "engine": "stt",
    "format": "ct2",
    "version": "v1",
    "files": [{"url": "https://models.example/model.bin", "sha256": "a" * 64, "path": "model.bin"}],
    "storage": {"size": "1Gi"},
}


def create(cluster: Cluster, kube: Kube, namespace: str, kind: str, name: str, spec: dict) -> Owner:
    """The owner must exist, or the garbage collector deletes what we apply under it."""
    cluster.apply(
        {
            "apiVersion": "voiceops.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )
    obj = kube.get(kind, name, namespace)
    assert obj is not None
    return Owner(kind, name, namespace, obj["metadata"]["uid"])


def pods_running(kube: Kube, namespace: str, labels: dict[str, str]) -> list[dict]:
    pods = kube.list("Pod", namespace, labels=labels)
    return [p for p in pods if p.get("status", {}).get("phase") in ("Running", "Succeeded")]


def apply_ollama_asset(cluster: Cluster, kube: Kube, namespace: str) -> list[dict]:
    owner = create(cluster, kube, namespace, "ModelAsset", "smollm", OLLAMA_ASSET)
    plan = plan_model_asset(
        observe_asset(
            owner=owner,
            generation=1,
            spec=OLLAMA_ASSET,
            status={},
            jobs=[],
            versions_in_use=frozenset(),
            now=NOW,
        ),
        SETTINGS,
    )
    kinds = [o["kind"] for o in plan.apply]
    assert "PersistentVolumeClaim" in kinds and "Job" in kinds, kinds
    for obj in plan.apply:
        kube.apply(obj)
    return plan.apply


def test_ollama_asset_job_and_claim_variants_are_accepted(
    cluster: Cluster, kube: Kube, namespace: str
):
    applied = apply_ollama_asset(cluster, kube, namespace)
    claim = kube.get("PersistentVolumeClaim", "smollm-models", namespace)
    assert claim is not None
    assert claim["spec"]["storageClassName"] == "standard"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    [job] = [o for o in applied if o["kind"] == "Job"]
    wait_for(
        "the Ollama pull Job's pod admitted",
        lambda: pods_running(kube, namespace, {"job-name": job["metadata"]["name"]}),
    )
    [pod] = pods_running(kube, namespace, {"job-name": job["metadata"]["name"]})
    assert pod["spec"]["imagePullSecrets"] == PULL_SECRETS

    # The prune Job of a file asset, with the same admission.
    files_owner = create(cluster, kube, namespace, "ModelAsset", "whisper", FILE_ASSET)
    claim = plan_model_asset(
        observe_asset(
            owner=files_owner,
            generation=1,
            spec=FILE_ASSET,
            status={},
            jobs=[],
            versions_in_use=frozenset(),
            now=NOW,
        ),
        SETTINGS,
    ).apply[0]
    assert claim["kind"] == "PersistentVolumeClaim"
    kube.apply(claim)
    prune = desired_prune_job(
        Asset(files_owner, ModelAssetSpec.model_validate(FILE_ASSET)), ["v0", "v1"], SETTINGS
    )
    kube.apply(prune)
    wait_for(
        "the prune Job's pod admitted",
        lambda: pods_running(kube, namespace, {"job-name": prune["metadata"]["name"]}),
    )


def test_ollama_engine_and_a_gateway_with_vendor_and_fallback_keys_are_accepted(
    cluster: Cluster, kube: Kube, namespace: str
):
    spec = {
        "stt": {
            "provider": "external",
            "external": {"vendor": "deepgram", "apiKeySecretRef": {"name": "dg", "key": "token"}},
        },
        "llm": {
            "model": "smollm",
            "fallback": {"vendor": "groq", "apiKeySecretRef": {"name": "groq", "key": "api-key"}},
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
        },
        "tts": {
            "provider": "external",
            "external": {
                "vendor": "elevenlabs",
                "voice": "21m00Tcm4TlvDq8ikWAM",
                "apiKeySecretRef": {"name": "eleven", "key": "xi-api-key"},
            },
        },
        "gateway": {
            "replicas": 2,
            # An exposed gateway needs keys (the CRD refuses it without).
            "service": {"type": "NodePort"},
            "auth": {"secretName": "gateway-keys"},
            "podAnnotations": {"sidecar.istio.io/inject": "false"},
        },
    }
    apply_ollama_asset(cluster, kube, namespace)  # the claim the engine mounts
    owner = create(cluster, kube, namespace, "VoiceAgent", "mixed", spec)
    secrets = {
        "dg": SecretPresence(True, frozenset({"token"})),
        "groq": SecretPresence(True, frozenset({"api-key"})),
        "eleven": SecretPresence(True, frozenset({"xi-api-key"})),
        "gateway-keys": SecretPresence(True, frozenset({"web"})),
    }
    plan = plan_voice_agent(
        observe_agent(
            owner=owner,
            generation=1,
            spec=spec,
            status={},
            assets={"smollm": ready_asset("smollm", OLLAMA_ASSET, "")},
            secrets=secrets,
            deployments={},
            pods=[],
            autoscaled=frozenset(),
            probes={},
            now=NOW,
        ),
        SETTINGS,
    )
    names = [f"{o['kind']}/{o['metadata']['name']}" for o in plan.apply]
    assert "Deployment/mixed-llm" in names and "Deployment/mixed-gateway" in names, names
    for obj in plan.apply:
        kube.apply(obj)

    llm = kube.get("Deployment", "mixed-llm", namespace)
    assert llm is not None
    containers = llm["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 2, [c["name"] for c in containers]  # engine + Ollama sidecar
    by_name = {c["name"]: c for c in containers}
    # The sidecar runs the model, so it gets the stage's resources; the relay a little.
    assert by_name["ollama"]["resources"] == spec["llm"]["resources"]
    assert by_name["llm"]["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"}}

    def available(name: str) -> bool:
        d = kube.get("Deployment", name, namespace) or {}
        want = d.get("spec", {}).get("replicas", 1)
        return d.get("status", {}).get("availableReplicas", 0) >= want

    # Pods that broke the restricted standard would be refused and never become available.
    wait_for("the Ollama engine available", lambda: available("mixed-llm"))
    wait_for("the gateway available", lambda: available("mixed-gateway"))
    gateway = kube.get("Deployment", "mixed-gateway", namespace)
    assert gateway is not None
    [keys] = [v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys"]
    mounted = {s["secret"]["name"] for s in keys["projected"]["sources"]}
    assert mounted == {"dg", "groq", "eleven"}
    agent_pods = pods_running(kube, namespace, {"app.kubernetes.io/instance": "mixed"})
    components = {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in agent_pods}
    assert components == {"llm", "gateway"}, components
    for pod in agent_pods:
        assert pod["spec"]["imagePullSecrets"] == PULL_SECRETS, pod["metadata"]["name"]
        if pod["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway":
            assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
