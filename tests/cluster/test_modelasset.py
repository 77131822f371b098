"""ModelAsset on the real control plane: a PVC and a download Job per version; the fetcher
(run as its Job would run it) reports; versions live side by side; old ones are pruned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fetch.fileserver import FileServer
from fetch.hubserver import HubServer
from fetch.s3server import ACCESS_KEY, SECRET_KEY, find_minio, minio_server
from testground import Cluster
from testground.harness import (
    ServedModel,
    condition,
    digest,
    download_job,
    make_ready_asset,
    model_paths,
    run_fetch_job,
    run_job_command,
    wait_for,
)

from voice_operator.kube import Kube

pytestmark = pytest.mark.cluster


def voice_asset(
    namespace: str, models: dict[str, ServedModel], version: str = "v1", **spec: object
) -> dict:
    files = spec.pop("files", None) or [
        {"url": models[n].url, "sha256": models[n].sha256, "path": p}
        for n, p in (("joe.onnx", "joe.onnx"), ("joe.onnx.json", "joe.onnx.json"))
    ]
    return {
        "apiVersion": "voiceops.dev/v1alpha1",
        "kind": "ModelAsset",
        "metadata": {"name": "joe", "namespace": namespace},
        "spec": {
            "engine": "tts",
            "format": "onnx",
            "version": version,
            "files": files,
            "storage": {"size": "1Gi"},
            **spec,
        },
    }


def fetch_job(kube: Kube, namespace: str, version: str, not_named: str = "") -> dict:
    return download_job(kube, namespace, "joe", version, not_named)


def asset(kube: Kube, namespace: str) -> dict:
    obj = kube.get("ModelAsset", "joe", namespace)
    assert obj is not None
    return obj


def wait_ready(kube: Kube, namespace: str, version: str) -> dict:
    def ready():
        obj = asset(kube, namespace)
        status = obj.get("status") or {}
        ok = (
            condition(obj, "Ready").get("status") == "True"
            and status.get("currentVersion") == version
        )
        return obj if ok else None

    return wait_for(f"version {version} Ready", ready)


def download(
    kube: Kube, cluster: Cluster, namespace: str, version: str, volume: Path, not_named: str = ""
):
    job = fetch_job(kube, namespace, version, not_named)
    return run_fetch_job(job, volume, cluster)


@pytest.mark.usefixtures("operator")
def test_create_gives_a_volume_and_a_job_then_ready_with_versions(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    model_server: dict[str, ServedModel],
    tmp_path: Path,
):
    cluster.apply(voice_asset(namespace, model_server))
    claim = wait_for("the PVC", lambda: kube.get("PersistentVolumeClaim", "joe-models", namespace))
    assert claim["metadata"]["ownerReferences"][0]["kind"] == "ModelAsset"
    job = fetch_job(kube, namespace, "v1")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["voice-fetch"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "joe-fetch"
    wait_for(
        "Downloading",
        lambda: asset(kube, namespace).get("status", {}).get("phase") == "Downloading",
    )

    result = download(kube, cluster, namespace, "v1", tmp_path)
    assert result.returncode == 0, result.stderr

    obj = wait_ready(kube, namespace, "v1")
    status = obj["status"]
    assert status["phase"] == "Ready"
    assert status["progress"]["percent"] == 100
    [v1] = status["versions"]
    assert v1["version"] == "v1"
    assert v1["path"] == "/joe/v1"
    assert {f["path"]: f["sha256"] for f in v1["files"]} == {
        "joe.onnx": model_server["joe.onnx"].sha256,
        "joe.onnx.json": model_server["joe.onnx.json"].sha256,
    }
    assert v1["bytes"] == model_server["joe.onnx"].size + model_server["joe.onnx.json"].size
    assert (tmp_path / "joe" / "v1" / "joe.onnx").stat().st_size == model_server["joe.onnx"].size
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    # The finished download Job is cleaned up; the version is recorded in status.
    wait_for(
        "the Job deleted",
        lambda: not kube.list("Job", namespace, labels={"voiceops.dev/asset": "joe"}),
    )
    row = cluster.kubectl("get", "modelasset", "joe", "-n", namespace).stdout.splitlines()[1]
    assert row.split()[:6] == ["joe", "tts", "v1", "v1", "Ready", "100"]
    events = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=joe",
        "-o",
        "json",
    ).stdout
    assert "Verified" in {e["reason"] for e in json.loads(events)["items"]}


@pytest.mark.usefixtures("operator")
def test_hub_and_s3_files_become_a_ready_version_with_credentials_from_secrets(
    cluster: Cluster, kube: Kube, namespace: str, tmp_path: Path
):
    binary = find_minio()
    if binary is None:
        pytest.skip("no minio binary (scripts/build-testground.sh minio builds one into the cache)")
    paths = model_paths()
    onnx, meta = paths["joe.onnx"], paths["joe.onnx.json"]
    with (
        FileServer() as cdn,
        HubServer(cdn) as hub,
        minio_server(binary, tmp_path / "minio") as s3,
    ):
        hub.add_repo("rhasspy/piper-voices", token="hf_cluster_token")
        hub.add_file("rhasspy/piper-voices", "en/joe.onnx", onnx)
        s3.put("voices", "joe/joe.onnx.json", meta)
        secrets = {
            "hf-token": {"token": "hf_cluster_token"},
            "s3-keys": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
        }
        for name, data in secrets.items():
            cluster.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": namespace},
                    "stringData": data,
                }
            )
        obj = voice_asset(
            namespace,
            {},
            files=[
                {"url": "hf://rhasspy/piper-voices@main/en/joe.onnx", "sha256": digest(onnx),
                 "path": "joe.onnx"},
                {"url": "s3://voices/joe/joe.onnx.json", "sha256": digest(meta),
                 "path": "joe.onnx.json"},
            ],
            huggingFace={"tokenSecretRef": {"name": "hf-token", "key": "token"},
                         "endpoint": hub.endpoint},
            s3={"endpoint": s3.endpoint, "pathStyle": True,
                "credentialsSecretRef": {"name": "s3-keys"}},
        )  # fmt: skip
        cluster.apply(obj)

        result = download(kube, cluster, namespace, "v1", tmp_path)

    assert result.returncode == 0, result.stderr
    [v1] = wait_ready(kube, namespace, "v1")["status"]["versions"]
    assert {f["path"]: f["sha256"] for f in v1["files"]} == {
        "joe.onnx": digest(onnx),
        "joe.onnx.json": digest(meta),
    }
    assert (tmp_path / "joe" / "v1" / "joe.onnx").read_bytes() == onnx.read_bytes()
    assert (tmp_path / "joe" / "v1" / "joe.onnx.json").read_bytes() == meta.read_bytes()
    # The token reached the Hub from the Secret; neither secret is in the fetcher's output.
    assert {r["authorization"] for r in hub.requests} == {"Bearer hf_cluster_token"}
    assert "hf_cluster_token" not in result.stdout + result.stderr
    assert SECRET_KEY not in result.stdout + result.stderr


@pytest.mark.usefixtures("operator")
def test_version_bump_downloads_beside_the_old_one(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    model_server: dict[str, ServedModel],
    tmp_path: Path,
):
    cluster.apply(voice_asset(namespace, model_server))
    assert download(kube, cluster, namespace, "v1", tmp_path).returncode == 0
    wait_ready(kube, namespace, "v1")

    cluster.apply(voice_asset(namespace, model_server, version="v2"))
    job = fetch_job(kube, namespace, "v2")
    bumped = wait_for(
        "v2 downloading",
        lambda: (o := asset(kube, namespace))["status"].get("phase") == "Downloading" and o,
    )
    # While v2 downloads, agents keep using v1.
    assert bumped["status"]["currentVersion"] == "v1"
    assert condition(bumped, "Ready")["status"] == "False"

    assert run_fetch_job(job, tmp_path, cluster).returncode == 0
    status = wait_ready(kube, namespace, "v2")["status"]
    assert [v["version"] for v in status["versions"]] == ["v2", "v1"]
    assert (tmp_path / "joe" / "v1" / "joe.onnx").exists()
    assert (tmp_path / "joe" / "v2" / "joe.onnx").exists()

    # Going back to v1 needs no download: it is still on disk.
    cluster.apply(voice_asset(namespace, model_server, version="v1"))
    wait_ready(kube, namespace, "v1")
    assert not [
        j
        for j in kube.list("Job", namespace, labels={"voiceops.dev/asset": "joe"})
        if j["metadata"]["labels"]["app.kubernetes.io/component"] == "fetch"
    ]


@pytest.mark.usefixtures("operator")
def test_failed_download_keeps_the_current_version(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    model_server: dict[str, ServedModel],
    tmp_path: Path,
):
    cluster.apply(voice_asset(namespace, model_server))
    assert download(kube, cluster, namespace, "v1", tmp_path).returncode == 0
    wait_ready(kube, namespace, "v1")

    broken = voice_asset(namespace, model_server, version="v2")
    broken["spec"]["files"][0]["sha256"] = "0" * 64
    cluster.apply(broken)
    broken_job = fetch_job(kube, namespace, "v2")
    result = run_fetch_job(broken_job, tmp_path, cluster)
    assert result.returncode == 3, result.stderr  # checksum mismatch: no retry helps

    def failed():
        obj = asset(kube, namespace)
        return obj if condition(obj, "Failed").get("status") == "True" else None

    obj = wait_for("the Failed condition", failed)
    assert obj["status"]["phase"] == "Failed"
    assert condition(obj, "Failed")["reason"] == "ChecksumMismatch"
    assert "still serving version v1" in condition(obj, "Failed")["message"]
    assert obj["status"]["currentVersion"] == "v1"
    assert [v["version"] for v in obj["status"]["versions"]] == ["v1"]
    assert not (tmp_path / "joe" / "v2" / "joe.onnx").exists()
    assert (tmp_path / "joe" / "v1" / "joe.onnx").exists()
    warnings = json.loads(
        cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "type=Warning", "-o", "json"
        ).stdout
    )["items"]
    assert "ChecksumMismatch" in {e["reason"] for e in warnings}

    # Fixing the digest is a new spec: a new Job, and the version heals.
    cluster.apply(voice_asset(namespace, model_server, version="v2"))
    result = download(
        kube, cluster, namespace, "v2", tmp_path, not_named=broken_job["metadata"]["name"]
    )
    assert result.returncode == 0, result.stderr
    wait_ready(kube, namespace, "v2")
    wait_for(
        "the failed Job deleted",
        lambda: kube.get("Job", broken_job["metadata"]["name"], namespace) is None,
    )


@pytest.mark.usefixtures("operator")
def test_retention_prunes_old_versions_nobody_uses(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    model_server: dict[str, ServedModel],
    tmp_path: Path,
):
    for version in ("v1", "v2", "v3"):
        cluster.apply(voice_asset(namespace, model_server, version=version, retainVersions=2))
        assert download(kube, cluster, namespace, version, tmp_path).returncode == 0
        wait_ready(kube, namespace, version)

    def pruned():
        obj = asset(kube, namespace)
        versions = [v["version"] for v in obj["status"]["versions"]]
        return versions if versions == ["v3", "v2"] else None

    [prune] = wait_for(
        "the prune Job",
        lambda: [
            j
            for j in kube.list("Job", namespace, labels={"voiceops.dev/asset": "joe"})
            if j["metadata"]["labels"]["app.kubernetes.io/component"] == "prune"
        ],
    )
    # Its command, run on our volume as the pod would run it, deletes exactly v1.
    assert run_job_command(prune, tmp_path).returncode == 0
    assert sorted(p.name for p in (tmp_path / "joe").iterdir()) == ["v2", "v3"]
    wait_for("v1 gone from status", pruned)
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    assert [e["message"] for e in events["items"] if e["reason"] == "VersionsPruned"] == [
        "deleted versions v1 from the volume"
    ]


@pytest.mark.usefixtures("operator")
def test_deleting_the_asset_removes_what_it_owns(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    model_server: dict[str, ServedModel],
):
    cluster.apply(voice_asset(namespace, model_server))
    wait_for("the PVC", lambda: kube.get("PersistentVolumeClaim", "joe-models", namespace))
    fetch_job(kube, namespace, "v1")
    cluster.kubectl("delete", "modelasset", "joe", "-n", namespace, "--wait=true")
    wait_for(
        "the PVC gone", lambda: kube.get("PersistentVolumeClaim", "joe-models", namespace) is None
    )
    wait_for("the Jobs gone", lambda: not kube.list("Job", namespace))
    wait_for(
        "the ServiceAccount gone",
        lambda: kube.get("ServiceAccount", "joe-fetch", namespace) is None,
    )


@pytest.mark.usefixtures("operator")
def test_an_asset_an_agent_uses_is_not_deleted_until_nothing_uses_it(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    model_server: dict[str, ServedModel],
    tmp_path: Path,
):
    make_ready_asset(cluster, kube, namespace, "joe", model_server, tmp_path)
    cluster.apply(
        {
            "apiVersion": "voiceops.dev/v1alpha1",
            "kind": "VoiceAgent",
            "metadata": {"name": "support", "namespace": namespace},
            "spec": {
                "stt": {"provider": "internal", "model": "missing-stt"},
                "llm": {"provider": "internal", "model": "missing-llm"},
                "tts": {"provider": "internal", "model": "joe"},
            },
        }
    )
    wait_for(
        "the in-use finalizer",
        lambda: (
            "voiceops.dev/in-use" in (asset(kube, namespace)["metadata"].get("finalizers") or [])
        ),
    )
    cluster.kubectl("delete", "modelasset", "joe", "-n", namespace, "--wait=false")

    def blocked():
        c = condition(asset(kube, namespace), "InUse")
        return c if c.get("reason") == "DeletionBlocked" else None

    c = wait_for("deletion blocked", blocked)
    assert "support" in c["message"]
    assert kube.get("PersistentVolumeClaim", "joe-models", namespace) is not None
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    assert any(e["reason"] == "DeletionBlocked" and e["type"] == "Warning" for e in events["items"])

    cluster.kubectl("delete", "voiceagent", "support", "-n", namespace, "--wait=true")
    wait_for("the asset gone", lambda: kube.get("ModelAsset", "joe", namespace) is None, 90)
    wait_for(
        "the PVC gone", lambda: kube.get("PersistentVolumeClaim", "joe-models", namespace) is None
    )
