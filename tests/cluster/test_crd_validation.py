"""The real apiserver enforces our CRD schemas: bad specs are rejected with the field named,
good ones are accepted with their defaults filled in."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest
from testground import Cluster

from voice_operator.api import modelasset, voiceagent
from voice_operator.api.common import POD_ANNOTATIONS_MAX_BYTES

pytestmark = pytest.mark.cluster

SHA = "a" * 64


def agent(namespace: str, **spec_overrides) -> dict:
    spec = {
        "stt": {"provider": "internal", "model": "whisper"},
        "llm": {"provider": "internal", "model": "smollm"},
        "tts": {"provider": "internal", "model": "joe"},
    }
    for key, value in spec_overrides.items():
        spec[key] = value
    return {
        "apiVersion": "voiceops.dev/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": "support", "namespace": namespace},
        "spec": spec,
    }


def asset(namespace: str, **spec_overrides) -> dict:
    spec = {
        "engine": "tts",
        "format": "onnx",
        "version": "v1",
        "files": [
            {"url": "https://models.example/joe.onnx", "sha256": SHA, "path": "joe.onnx"},
            {"url": "https://models.example/joe.onnx.json", "sha256": SHA, "path": "joe.onnx.json"},
        ],
        "storage": {"size": "1Gi"},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "voiceops.dev/v1alpha1",
        "kind": "ModelAsset",
        "metadata": {"name": "joe", "namespace": namespace},
        "spec": spec,
    }


def rejected(cluster: Cluster, obj: dict) -> str:
    result = cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=json.dumps(obj), check=False
    )
    assert result.returncode != 0, f"accepted: {obj}"
    return result.stderr


def test_valid_agent_is_accepted_with_defaults(cluster: Cluster, namespace: str):
    cluster.apply(agent(namespace))
    stored = json.loads(
        cluster.kubectl("get", "voiceagent", "support", "-n", namespace, "-o", "json").stdout
    )
    assert stored["spec"]["stt"]["replicas"] == 1
    assert stored["spec"]["stt"]["settings"] == {"threads": 2, "temperature": 0.0, "language": "en"}
    assert stored["spec"]["rollout"] == {"progressDeadlineSeconds": 600, "autoRollback": True}
    assert stored["spec"]["gateway"]["service"] == {"type": "ClusterIP", "port": 8080}


def test_turn_detection_defaults_and_bounds(cluster: Cluster, namespace: str):
    cluster.apply(agent(namespace))
    stored = json.loads(
        cluster.kubectl("get", "voiceagent", "support", "-n", namespace, "-o", "json").stdout
    )
    assert stored["spec"]["gateway"]["turnDetection"] == {
        "mode": "vad",
        "silenceMs": 500,
        "minSpeechMs": 250,
        "maxUtteranceMs": 30000,
        "bargeIn": True,
        "interimMs": 600,
    }
    err = rejected(cluster, agent(namespace, gateway={"turnDetection": {"silenceMs": 20}}))
    assert "spec.gateway.turnDetection.silenceMs" in err
    err = rejected(cluster, agent(namespace, gateway={"turnDetection": {"mode": "psychic"}}))
    assert "spec.gateway.turnDetection.mode" in err


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_an_exposed_gateway_without_auth_is_rejected_naming_the_field(
    cluster: Cluster, namespace: str, service_type: str
):
    err = rejected(cluster, agent(namespace, gateway={"service": {"type": service_type}}))
    assert "spec.gateway.auth" in err
    assert "required when spec.gateway.service.type is not ClusterIP" in err
    exposed = {"service": {"type": service_type}, "auth": {"secretName": "gateway-keys"}}
    cluster.apply(agent(namespace, gateway=exposed))


def test_cors_origins_must_be_origins(cluster: Cluster, namespace: str):
    err = rejected(cluster, agent(namespace, gateway={"corsOrigins": ["https://a.example/path"]}))
    assert "spec.gateway.corsOrigins[0]" in err
    cluster.apply(agent(namespace, gateway={"corsOrigins": ["https://app.example:8443"]}))


def test_unknown_provider_is_rejected_naming_the_field(cluster: Cluster, namespace: str):
    err = rejected(cluster, agent(namespace, stt={"provider": "magic", "model": "whisper"}))
    assert "spec.stt.provider" in err
    assert 'Unsupported value: "magic"' in err


def test_external_without_key_reference_is_rejected(cluster: Cluster, namespace: str):
    err = rejected(
        cluster, agent(namespace, stt={"provider": "external", "external": {"vendor": "deepgram"}})
    )
    assert "spec.stt.external.apiKeySecretRef" in err
    assert "Required value" in err


def test_external_without_external_block_is_rejected(cluster: Cluster, namespace: str):
    err = rejected(cluster, agent(namespace, llm={"provider": "external"}))
    assert "spec.llm.external" in err
    assert "an external provider needs spec.llm.external" in err


def test_internal_without_model_is_rejected(cluster: Cluster, namespace: str):
    err = rejected(cluster, agent(namespace, tts={"provider": "internal"}))
    assert "spec.tts.model" in err


def test_negative_replicas_are_rejected(cluster: Cluster, namespace: str):
    err = rejected(cluster, agent(namespace, stt={"model": "whisper", "replicas": -1}))
    assert "spec.stt.replicas" in err
    assert "should be greater than or equal to 0" in err


def test_unknown_fields_are_rejected(cluster: Cluster, namespace: str):
    obj = agent(namespace)
    obj["spec"]["stt"]["modle"] = "typo"
    err = rejected(cluster, obj)
    assert "modle" in err


def test_valid_asset_is_accepted(cluster: Cluster, namespace: str):
    cluster.apply(asset(namespace))
    stored = json.loads(
        cluster.kubectl("get", "modelasset", "joe", "-n", namespace, "-o", "json").stdout
    )
    assert stored["spec"]["retainVersions"] == 2
    assert stored["spec"]["storage"]["accessModes"] == ["ReadWriteOnce"]


def test_hub_and_s3_sources_are_accepted_with_defaults(cluster: Cluster, namespace: str):
    obj = asset(
        namespace,
        files=[
            {"url": "hf://rhasspy/piper-voices@v1.0.0/en/joe.onnx", "sha256": SHA,
             "path": "joe.onnx"},
            {"url": "s3://models/piper/joe.onnx.json", "sha256": SHA, "path": "joe.onnx.json"},
        ],
        huggingFace={"tokenSecretRef": {"name": "hf", "key": "token"}},
        s3={"endpoint": "http://minio.storage:9000", "credentialsSecretRef": {"name": "s3"}},
    )  # fmt: skip
    cluster.apply(obj)
    stored = json.loads(
        cluster.kubectl("get", "modelasset", "joe", "-n", namespace, "-o", "json").stdout
    )
    assert stored["spec"]["s3"]["pathStyle"] is False
    assert stored["spec"]["s3"]["credentialsSecretRef"] == {
        "name": "s3",
        "accessKeyIdKey": "AWS_ACCESS_KEY_ID",
        "secretAccessKeyKey": "AWS_SECRET_ACCESS_KEY",
    }


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda s: s["files"][0].pop("sha256"), "spec.files[0].sha256", "Required value"),
        (lambda s: s["files"][0].update(sha256="abc"), "spec.files[0].sha256", "should match"),
        (
            lambda s: s["files"][0].update(url="ftp://x/joe.onnx"),
            "spec.files[0].url",
            "should match",
        ),
        (
            lambda s: s["files"][0].update(path="../../etc/passwd"),
            "spec.files[0].path",
            "must stay inside the version folder",
        ),
        (
            lambda s: s["files"][1].update(path="joe.onnx"),
            "spec.files",
            'duplicate entries for key [path="joe.onnx"]',
        ),
        (lambda s: s["storage"].update(size="0"), "spec.storage.size", "must be greater than zero"),
        (lambda s: s.update(format="gguf"), "spec.format", "does not fit spec.engine"),
        (lambda s: s.update(files=s["files"][:1]), "spec.files", "needs both the .onnx"),
        (
            lambda s: s["storage"].update(existingClaim="shared"),
            "spec.storage",
            "exactly one of storage.size and storage.existingClaim",
        ),
        (lambda s: s.update(format="ollama"), "spec", "format ollama needs spec.ollama"),
        (lambda s: s.update(version="v 2"), "spec.version", "should match"),
        (
            lambda s: s["files"][0].update(url="hf://rhasspy/joe.onnx"),
            "spec.files[0].url",
            "an hf url is hf://<org>/<repo>[@<revision>]/<path of a file in the repo>",
        ),
        (
            lambda s: s["files"][0].update(url="s3://Models/joe.onnx"),
            "spec.files[0].url",
            "an s3 url is s3://<bucket>/<key>",
        ),
        (
            lambda s: s.update(huggingFace={"endpoint": "hub.internal"}),
            "spec.huggingFace.endpoint",
            "should match",
        ),
        (
            lambda s: s.update(s3={"credentialsSecretRef": {}}),
            "spec.s3.credentialsSecretRef.name",
            "Required value",
        ),
    ],
    ids=[
        "missing-sha256",
        "short-sha256",
        "ftp-url",
        "escaping-path",
        "duplicate-path",
        "zero-size",
        "wrong-format",
        "piper-without-json",
        "size-and-claim",
        "ollama-no-model",
        "version-with-space",
        "hf-url-without-repo",
        "s3-url-bad-bucket",
        "hf-endpoint-not-a-url",
        "s3-secret-without-name",
    ],
)
def test_bad_asset_is_rejected_naming_the_field(
    cluster: Cluster, namespace: str, change, field: str, words: str
):
    obj = asset(namespace)
    spec = copy.deepcopy(obj["spec"])
    change(spec)
    obj["spec"] = spec
    err = rejected(cluster, obj)
    assert field in err, err
    assert words in err, err


def test_kubectl_explain_shows_descriptions(cluster: Cluster):
    out = cluster.kubectl("explain", "voiceagent.spec.stt.provider").stdout
    assert "internal: our engine runs in the cluster" in out
    out = cluster.kubectl("explain", "modelasset.spec.retainVersions").stdout
    assert "How many Ready versions to keep" in out


def test_printer_columns(cluster: Cluster, namespace: str):
    cluster.apply(agent(namespace))
    header = cluster.kubectl("get", "voiceagents", "-n", namespace).stdout.splitlines()[0]
    assert header.split() == ["NAME", "READY", "STT", "LLM", "TTS", "AGE"]
    cluster.apply(asset(namespace))
    header = cluster.kubectl("get", "ma", "-n", namespace).stdout.splitlines()[0]
    assert header.split() == ["NAME", "ENGINE", "VERSION", "CURRENT", "PHASE", "PROGRESS", "AGE"]
    assert "support" in cluster.kubectl("get", "voice", "-n", namespace).stdout


KINDS = {
    "VoiceAgent": (agent, voiceagent.MAX_NAME_LENGTH),
    "ModelAsset": (asset, modelasset.MAX_NAME_LENGTH),
}


def named(kind: str, namespace: str, name: str) -> dict:
    obj = KINDS[kind][0](namespace)
    obj["metadata"]["name"] = name
    return obj


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("support.v2", "must be a DNS-1035 label"),
        ("2support", "must be a DNS-1035 label"),
        ("a" * 64, "must be at most"),
        (None, "must be at most"),  # one over the kind's limit
    ],
    ids=["dotted", "leading-digit", "64-characters", "one-over-the-limit"],
)
def test_a_name_no_child_could_carry_is_rejected_naming_metadata_name(
    cluster: Cluster, namespace: str, kind: str, name: str | None, words: str
):
    limit = KINDS[kind][1]
    name = name or "a" * (limit + 1)
    err = rejected(cluster, named(kind, namespace, name))
    assert f'metadata.name: Invalid value: "{name}": metadata.name {words}' in err, err
    if words == "must be at most":
        assert f"at most {limit} characters" in err, err
    assert "<nil>" not in err, err


@pytest.mark.parametrize("kind", KINDS)
def test_the_longest_allowed_name_is_accepted(cluster: Cluster, namespace: str, kind: str):
    name = "a" * KINDS[kind][1]
    cluster.apply(named(kind, namespace, name))
    cluster.kubectl("get", kind.lower(), name, "-n", namespace)


def stt(**fields) -> dict:
    return {"provider": "internal", "model": "whisper", **fields}


@pytest.mark.parametrize(
    ("annotations", "field", "words"),
    [
        (
            {"bad key!": "x"},
            "spec.stt.podAnnotations",
            "annotation key 'bad key!' is not a qualified name",
        ),
        ({"a" * 64: "x"}, "spec.stt.podAnnotations", "is not a qualified name"),
        ({"big": "x" * (POD_ANNOTATIONS_MAX_BYTES + 1)}, "spec.stt.podAnnotations.big", "Too long"),
        (
            {f"k{i}": "x" * 30_000 for i in range(3)},
            "spec.stt.podAnnotations",
            "keys and values together must be at most 64 KiB",
        ),
    ],
    ids=["invalid-key", "64-character-name", "oversize-value", "oversize-total"],
)
def test_bad_pod_annotations_are_rejected_naming_the_field(
    cluster: Cluster, namespace: str, annotations: dict, field: str, words: str
):
    err = rejected(cluster, agent(namespace, stt=stt(podAnnotations=annotations)))
    assert f"{field}: " in err, err
    assert words in err, err


def test_pod_annotations_kubernetes_accepts_are_accepted(cluster: Cluster, namespace: str):
    annotations = {"sidecar.istio.io/inject": "false", "Example.COM/a_b.c-d": "1", "a" * 63: ""}
    cluster.apply(agent(namespace, stt=stt(podAnnotations=annotations)))


def test_an_invalid_resource_name_is_rejected(cluster: Cluster, namespace: str):
    err = rejected(cluster, agent(namespace, stt=stt(resources={"requests": {"cpu ": "1"}})))
    assert "spec.stt.resources.requests: " in err, err
    assert "resource name 'cpu ' is not a qualified name" in err, err


def test_a_2_mb_spec_is_rejected_naming_the_field_not_by_etcd(cluster: Cluster, namespace: str):
    prompt = {"model": "smollm", "settings": {"systemPrompt": "x" * 2_000_000}}
    err = rejected(cluster, agent(namespace, llm=prompt))
    assert "spec.llm.settings.systemPrompt: Too long: may not be more than 8192" in err, err
    assert "etcdserver" not in err, err


def test_too_many_files_are_rejected_naming_the_field(cluster: Cluster, namespace: str):
    files = [
        {"url": f"https://models.example/{i}.onnx", "sha256": SHA, "path": f"{i}.onnx"}
        for i in range(33)
    ]
    err = rejected(cluster, asset(namespace, files=files))
    assert "spec.files: Too many: 33: must have at most 32 items" in err, err


def test_rejected_apply_leaves_nothing(cluster: Cluster, namespace: str):
    rejected(cluster, agent(namespace, stt={"provider": "magic"}))
    with pytest.raises(subprocess.CalledProcessError):
        cluster.kubectl("get", "voiceagent", "support", "-n", namespace)
