"""VoiceAgent on the real control plane: one resource becomes engines, a gateway and its
routes; drift is corrected; external vendors are reached through Secrets, never copies."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from testground import Cluster, harness
from testground.harness import (
    EXTERNAL_LLM,
    Operator,
    ServedModel,
    condition,
    make_ready_asset,
    wait_for,
)

from voice_operator.kube import Kube

pytestmark = pytest.mark.cluster

API_KEY = "sk-test-4f1c9a7e-do-not-leak"


def agent_manifest(namespace: str, **stages: dict) -> dict:
    return harness.agent_manifest(
        namespace, **{"rollout": {"progressDeadlineSeconds": 15}, **stages}
    )


@pytest.fixture
def assets(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    operator: Operator,  # noqa: ARG001 (it is what makes the assets Ready)
    model_server: dict[str, ServedModel],
    tmp_path: Path,
) -> Path:
    for name in ("whisper", "smollm", "joe"):
        make_ready_asset(cluster, kube, namespace, name, model_server, tmp_path)
    return tmp_path


def agent(kube: Kube, namespace: str) -> dict:
    obj = kube.get("VoiceAgent", "support", namespace)
    assert obj is not None
    return obj


def wait_condition(
    kube: Kube,
    namespace: str,
    type_: str,
    status: str,
    reason: str | None = None,
    timeout: float = 60,
) -> dict:
    def check():
        obj = agent(kube, namespace)
        c = condition(obj, type_)
        ok = c.get("status") == status and (reason is None or c.get("reason") == reason)
        return (
            obj
            if ok and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
            else None
        )

    return wait_for(f"{type_}={status} ({reason})", check, timeout)


@pytest.mark.usefixtures("assets")
def test_agent_becomes_engines_gateway_and_routes(cluster: Cluster, kube: Kube, namespace: str):
    cluster.apply(agent_manifest(namespace))
    obj = wait_condition(kube, namespace, "Ready", "True")
    uid = obj["metadata"]["uid"]
    for part in ("stt", "llm", "tts", "gateway"):
        for kind in ("Deployment", "Service"):
            child = kube.get(kind, f"support-{part}", namespace)
            assert child is not None, (kind, part)
            [owner] = child["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["uid"], owner["controller"]) == ("VoiceAgent", uid, True)
            labels = child["metadata"]["labels"]
            assert labels["app.kubernetes.io/instance"] == "support"
            assert labels["app.kubernetes.io/component"] == part
            assert labels["app.kubernetes.io/part-of"] == "voice-operator"
            assert labels["app.kubernetes.io/managed-by"] == "voice-operator"
    stt = kube.get("Deployment", "support-stt", namespace)
    pod = stt["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STT_BACKEND"] == "faster-whisper"  # the asset is CTranslate2
    assert env["STT_MODEL_PATH"] == "/models/whisper/v1/"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [models] = [v for v in pod["volumes"] if v["name"] == "models"]
    assert models["persistentVolumeClaim"] == {"claimName": "whisper-models", "readOnly": True}
    annotations = stt["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["voiceops.dev/revision"] == obj["status"]["components"]["stt"]["revision"]
    assert stt["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    routes = json.loads(kube.get("ConfigMap", "support-routes", namespace)["data"]["routes.json"])
    assert routes["stages"]["llm"]["url"] == f"http://support-llm.{namespace}.svc:8080"
    assert routes["stages"]["llm"]["modelVersion"] == "v1"

    # kopf keeps no state on our objects: no progress or diff-base annotations, no
    # finalizer (owner references do the cleanup).
    agent = kube.get("VoiceAgent", "support", namespace)
    assert not [k for k in agent["metadata"].get("annotations", {}) if "kopf" in k]
    assert not agent["metadata"].get("finalizers")
    for name in ("whisper", "smollm", "joe"):
        model = kube.get("ModelAsset", name, namespace)
        assert not [k for k in model["metadata"].get("annotations", {}) if "kopf" in k], name

    status = obj["status"]
    assert status["gateway"]["url"] == f"http://support-gateway.{namespace}.svc:8080"
    assert status["components"]["tts"]["serving"] == "internal joe@v1"
    assert status["components"]["stt"]["readyReplicas"] == 1
    row = cluster.kubectl("get", "voiceagents", "-n", namespace).stdout.splitlines()[1].split()
    assert row[:8] == [
        "support",
        "True",
        "internal",
        "whisper@v1",
        "internal",
        "smollm@v1",
        "internal",
        "joe@v1",
    ]


@pytest.mark.usefixtures("assets")
def test_deleting_the_agent_removes_its_children(cluster: Cluster, kube: Kube, namespace: str):
    cluster.apply(agent_manifest(namespace))
    wait_condition(kube, namespace, "Ready", "True")
    cluster.kubectl("delete", "voiceagent", "support", "-n", namespace)
    for kind in ("Deployment", "Service", "ConfigMap"):
        wait_for(
            f"{kind}s removed by the garbage collector",
            lambda kind=kind: (
                not [
                    o for o in kube.list(kind, namespace, labels={"voiceops.dev/agent": "support"})
                ]
            ),
        )


@pytest.mark.usefixtures("assets")
def test_drift_is_corrected_but_autoscaled_replicas_are_left_alone(
    cluster: Cluster, kube: Kube, namespace: str
):
    cluster.apply(agent_manifest(namespace))
    wait_condition(kube, namespace, "Ready", "True")
    original = kube.get("Deployment", "support-tts", namespace)
    image = original["spec"]["template"]["spec"]["containers"][0]["image"]
    cluster.kubectl(
        "set", "image", "deployment/support-tts", "tts=evil.example/tts:1", "-n", namespace
    )
    cluster.kubectl("set", "env", "deployment/support-tts", "TTS_SPEED=9", "-n", namespace)
    cluster.kubectl("annotate", "deployment/support-tts", "team=voice", "-n", namespace)

    def restored():
        d = kube.get("Deployment", "support-tts", namespace)
        c = d["spec"]["template"]["spec"]["containers"][0]
        speed = {e["name"]: e.get("value") for e in c["env"]}.get("TTS_SPEED")
        return d if c["image"] == image and speed == "1.0" else None

    fixed = wait_for("image and env restored", restored)
    # A field we never set is the user's: it stays.
    assert fixed["metadata"]["annotations"]["team"] == "voice"

    cluster.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "support-llm", "namespace": namespace},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "support-llm",
                },
                "minReplicas": 3,
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
        }
    )
    wait_for(
        "the HPA scaled the LLM to 3",
        lambda: kube.get("Deployment", "support-llm", namespace)["spec"]["replicas"] == 3,
        timeout=90,
    )
    # A reconcile for another reason must not put replicas back to the spec's 1.
    cluster.kubectl("set", "env", "deployment/support-llm", "LLM_CONTEXT=1", "-n", namespace)
    wait_for(
        "env restored",
        lambda: (
            {
                e["name"]: e.get("value")
                for e in kube.get("Deployment", "support-llm", namespace)["spec"]["template"][
                    "spec"
                ]["containers"][0]["env"]
            }.get("LLM_CONTEXT")
            == "2048"
        ),
    )
    assert kube.get("Deployment", "support-llm", namespace)["spec"]["replicas"] == 3


@pytest.mark.usefixtures("assets")
def test_external_stage_uses_the_secret_and_never_copies_the_key(
    cluster: Cluster, kube: Kube, namespace: str, operator: Operator
):
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "groq", "namespace": namespace},
            "data": {"api-key": base64.b64encode(API_KEY.encode()).decode()},
        }
    )
    cluster.apply(agent_manifest(namespace, llm=EXTERNAL_LLM))
    obj = wait_condition(kube, namespace, "Ready", "True")
    assert kube.get("Deployment", "support-llm", namespace) is None
    assert obj["status"]["components"]["llm"]["serving"] == "external groq:llama-3.1-8b-instant"
    routes = json.loads(kube.get("ConfigMap", "support-routes", namespace)["data"]["routes.json"])
    assert routes["stages"]["llm"]["provider"] == "external"
    assert routes["stages"]["llm"]["apiKeyFile"] == "/var/run/secrets/voiceops/llm/api-key"
    assert routes["stages"]["llm"]["secretRef"] == {"name": "groq", "key": "api-key"}
    gateway = kube.get("Deployment", "support-gateway", namespace)
    [keys] = [v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys"]
    assert keys["projected"]["sources"] == [
        {
            "secret": {
                "name": "groq",
                "optional": True,
                "items": [{"key": "api-key", "path": "llm/api-key"}],
            }
        }
    ]

    everything = [
        cluster.kubectl(
            "get",
            "configmaps,voiceagents,modelassets,deployments,events",
            "-n",
            namespace,
            "-o",
            "json",
        ).stdout,
        operator.output,
    ]
    operator.stop()  # its whole log so far
    everything.append(operator.output)
    assert not [text for text in everything if API_KEY in text]
    assert not [text for text in everything if base64.b64encode(API_KEY.encode()).decode() in text]


@pytest.mark.usefixtures("operator")
def test_missing_asset_waits_then_heals_without_a_nudge(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    model_server: dict[str, ServedModel],
    tmp_path: Path,
):
    make_ready_asset(cluster, kube, namespace, "whisper", model_server, tmp_path)
    make_ready_asset(cluster, kube, namespace, "joe", model_server, tmp_path)
    cluster.apply(agent_manifest(namespace))
    obj = wait_condition(kube, namespace, "Progressing", "True", "ModelNotReady")
    assert condition(obj, "Ready")["status"] == "False"
    assert "ModelAsset smollm" in condition(obj, "Progressing")["message"]
    assert kube.get("Deployment", "support-llm", namespace) is None

    make_ready_asset(cluster, kube, namespace, "smollm", model_server, tmp_path)
    wait_condition(kube, namespace, "Ready", "True")


@pytest.mark.usefixtures("assets")
def test_wrong_asset_and_missing_secret_degrade_and_heal(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
):
    # A GGUF language model named as the speech-to-text model.
    cluster.apply(agent_manifest(namespace, stt={"provider": "internal", "model": "smollm"}))
    obj = wait_condition(kube, namespace, "Degraded", "True", "ModelKindMismatch")
    assert "ModelAsset smollm is a llm model (gguf)" in condition(obj, "Degraded")["message"]
    assert condition(obj, "Ready")["status"] == "False"
    cluster.apply(agent_manifest(namespace))
    wait_condition(kube, namespace, "Ready", "True")

    external = {
        "provider": "external",
        "external": {
            "vendor": "elevenlabs",
            "apiKeySecretRef": {"name": "eleven", "key": "xi-api-key"},
        },
    }
    cluster.apply(agent_manifest(namespace, tts=external))
    obj = wait_condition(kube, namespace, "Degraded", "True", "SecretNotFound")
    # What served before keeps serving while the Secret is missing.
    assert obj["status"]["components"]["tts"]["serving"] == "internal joe@v1"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "eleven", "namespace": namespace},
            "stringData": {"wrong-key": "x"},
        }
    )
    wait_condition(kube, namespace, "Degraded", "True", "SecretKeyNotFound")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "eleven", "namespace": namespace},
            "stringData": {"xi-api-key": "x"},
        }
    )
    obj = wait_condition(kube, namespace, "Degraded", "False")
    assert obj["status"]["components"]["tts"]["serving"] == "external elevenlabs"
    wait_condition(kube, namespace, "Ready", "True")


@pytest.mark.usefixtures("assets")
def test_a_child_the_apiserver_refuses_makes_the_agent_degraded_until_it_can_be_applied(
    cluster: Cluster, kube: Kube, namespace: str, caplog: pytest.LogCaptureFixture
):
    # Room for two Services: the third the agent needs is refused, as when a cluster's
    # Service range is exhausted.
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "services", "namespace": namespace},
            "spec": {"hard": {"services": "2"}},
        }
    )
    cluster.apply(agent_manifest(namespace))
    obj = wait_condition(kube, namespace, "Degraded", "True", "ApplyFailed")
    degraded = condition(obj, "Degraded")
    assert degraded["message"].startswith("Service support-")
    assert "exceeded quota" in degraded["message"]
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)[
        "items"
    ]
    warnings = [e for e in events if e["reason"] == "ApplyFailed"]
    assert warnings, "no ApplyFailed Event"
    assert all(e["type"] == "Warning" for e in warnings)
    assert all(e["involvedObject"]["name"] == "support" for e in warnings)

    cluster.kubectl("delete", "resourcequota", "services", "-n", namespace)
    # Retried with backoff, so within the longest backoff step plus a reconcile.
    wait_condition(kube, namespace, "Ready", "True", timeout=120)
    assert condition(agent(kube, namespace), "Degraded")["status"] == "False"
    # Reported as a condition and an Event, so logged in one line, without a traceback.
    lines = [r for r in caplog.records if "exceeded quota" in r.getMessage()]
    assert lines
    assert all(r.exc_info is None for r in lines)
