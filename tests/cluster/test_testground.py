"""The test ground behaves like a cluster: Deployments become Available on kwok's nodes,
pods can fail on purpose, Jobs complete."""

from __future__ import annotations

import json

import pytest
from testground import CRASH_LOOP, NEVER_READY, Cluster, kwok_placement

pytestmark = pytest.mark.cluster
# These tests check the test ground itself with bare pods, not our rendered ones.
POD_SECURITY = "privileged"


def deployment(name: str, *, annotations: dict | None = None, deadline: int = 600) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations or {}},
                "spec": {
                    "containers": [{"name": "app", "image": "example.invalid/app:1"}],
                    **kwok_placement(),
                },
            },
        },
    }


def condition(cluster: Cluster, kind: str, name: str, namespace: str, type_: str) -> dict:
    obj = json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
    return next((c for c in obj["status"].get("conditions", []) if c["type"] == type_), {})


def test_deployment_reaches_available_on_simulated_nodes(cluster: Cluster, namespace: str):
    cluster.apply({**deployment("web"), "metadata": {"name": "web", "namespace": namespace}})
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Available", "deployment/web", "--timeout=60s"
    )
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
    assert len(pods["items"]) == 2
    assert {p["spec"]["nodeName"] for p in pods["items"]} <= {"kwok-node-0", "kwok-node-1"}
    assert all(p["status"]["phase"] == "Running" for p in pods["items"])


def test_pods_with_the_failing_annotation_exceed_the_progress_deadline(
    cluster: Cluster, namespace: str
):
    broken = deployment("broken", annotations={NEVER_READY: "true"}, deadline=10)
    cluster.apply({**broken, "metadata": {"name": "broken", "namespace": namespace}})
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=jsonpath={.status.conditions[?(@.type=="
        "'Progressing')].reason}=ProgressDeadlineExceeded",
        "deployment/broken",
        "--timeout=90s",
    )
    progressing = condition(cluster, "deployment", "broken", namespace, "Progressing")
    assert progressing["status"] == "False"
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
    assert pods["items"]
    assert all(p["status"]["phase"] == "Running" for p in pods["items"])
    assert not any(
        c["status"] == "True"
        for p in pods["items"]
        for c in p["status"]["conditions"]
        if c["type"] == "Ready"
    )


def test_engine_pods_of_a_never_ready_model_version_stay_unready(cluster: Cluster, namespace: str):
    broken = deployment("model", deadline=10)
    broken["spec"]["template"]["metadata"]["labels"]["voiceops.dev/model-version"] = "never-ready"
    cluster.apply({**broken, "metadata": {"name": "model", "namespace": namespace}})
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=jsonpath={.status.conditions[?(@.type=="
        "'Progressing')].reason}=ProgressDeadlineExceeded",
        "deployment/model",
        "--timeout=90s",
    )


def test_pods_annotated_crash_loop_crash(cluster: Cluster, namespace: str):
    crashing = deployment("crashing", annotations={CRASH_LOOP: "true"})
    cluster.apply({**crashing, "metadata": {"name": "crashing", "namespace": namespace}})
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=jsonpath={.status.containerStatuses[0].state.waiting.reason}=CrashLoopBackOff",
        "pod",
        "-l",
        "app=crashing",
        "--timeout=60s",
    )


def test_job_reaches_complete(cluster: Cluster, namespace: str):
    cluster.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once", "namespace": namespace},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "once", "image": "example.invalid/once:1"}],
                        **kwok_placement(),
                    }
                },
            },
        }
    )
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "job/once", "--timeout=60s"
    )
    assert condition(cluster, "job", "once", namespace, "Complete")["status"] == "True"


def test_claims_bind_and_pods_using_them_run(cluster: Cluster, namespace: str):
    if not cluster.local:
        pytest.skip("an external cluster brings its own storage")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "reader", "namespace": namespace},
            "spec": {
                "containers": [
                    {
                        "name": "r",
                        "image": "example.invalid/r:1",
                        "volumeMounts": [{"name": "d", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
                **kwok_placement(),
            },
        },
    )
    cluster.kubectl(
        "wait", "-n", namespace, "--for=jsonpath={.status.phase}=Bound", "pvc/data", "--timeout=60s"
    )
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/reader", "--timeout=60s")


def test_namespaces_enforce_the_restricted_pod_security_standard(cluster: Cluster, namespace: str):
    """Other modules' namespaces refuse pods that break the restricted standard, so our
    rendered pods are checked by the real admission plugin."""
    name = f"{namespace}-restricted"
    cluster.kubectl("create", "namespace", name)
    try:
        cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
        bare = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "bare", "namespace": name},
            "spec": {"containers": [{"name": "c", "image": "example.invalid/c:1"}]},
        }
        refused = cluster.kubectl(
            "apply", "--server-side", "-f", "-", input=json.dumps(bare), check=False
        )
        assert refused.returncode != 0
        assert "violates PodSecurity" in refused.stderr
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false")
