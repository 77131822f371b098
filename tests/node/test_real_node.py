"""A pod that really runs: on the test ground's real node, with no placement of its own, as
on a user's kind cluster. Each story uses the busybox smoke image and the restricted Pod
Security Standard the namespace enforces."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from testground import Cluster
from testground.harness import wait_for
from testground.node import RealNode
from testground.storage import VOLUMES

from node.conftest import host_settings
from node.userpath import port_forward

pytestmark = pytest.mark.node

# What the restricted Pod Security Standard asks of every pod and container.
POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
PAGE = "hello from the real node"


def pod(
    node: RealNode,
    name: str,
    script: str,
    *,
    labels: dict[str, str] | None = None,
    restart: str = "Always",
    **container: Any,
) -> dict:
    """A pod of the smoke image running `script` in busybox sh; no nodeSelector."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "securityContext": POD_SECURITY_CONTEXT,
            "containers": [
                {
                    "name": "main",
                    "image": node.smoke_image,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "securityContext": CONTAINER_SECURITY_CONTEXT,
                    **container,
                }
            ],
        },
    }


def web_server(node: RealNode, name: str, *, volume: str | None = None) -> dict:
    """busybox httpd on :8080 serving a page it writes, Ready once the page answers."""
    root = "/data" if volume else "/tmp/www"
    manifest = pod(
        node,
        name,
        f"mkdir -p {root} && echo '{PAGE}' > {root}/index.html && echo serving {root} && "
        f"exec httpd -f -p 8080 -h {root}",
        ports=[{"containerPort": 8080, "name": "http"}],
        readinessProbe={"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
    )
    if volume:
        manifest["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": root}]
        manifest["spec"]["volumes"] = [
            {"name": "data", "persistentVolumeClaim": {"claimName": volume}}
        ]
    return manifest


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict:
    return json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: int = 90) -> dict:
    cluster.kubectl(
        "wait",
        "--for=condition=Ready",
        f"pod/{name}",
        "-n",
        namespace,
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )
    return get(cluster, "pod", name, namespace)


def wait_finished(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> dict:
    def terminated() -> dict | None:
        statuses = (
            get(cluster, "pod", name, namespace).get("status", {}).get("containerStatuses", [])
        )
        state = statuses[0].get("state", {}) if statuses else {}
        return state.get("terminated")

    return wait_for(f"pod {name} to finish", terminated, timeout=timeout, poll=0.5)


def fetch_local(base_url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base_url}/index.html", timeout=10) as r:
        return r.read().decode()


def test_a_non_root_pod_with_a_volume_becomes_ready_and_writes_it(
    cluster: Cluster, real_node: RealNode, namespace: str
):
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}},
    }
    server = web_server(real_node, "web", volume="data")
    server["metadata"]["namespace"] = namespace
    started = time.monotonic()
    cluster.apply(claim, server)

    ready = wait_ready(cluster, namespace, "web")

    print(f"apply to Ready: {time.monotonic() - started:.1f} s")
    assert ready["spec"]["nodeName"] == real_node.name, "a pod with no placement goes to kwok"
    bound = get(cluster, "pvc", "data", namespace)
    written = VOLUMES / bound["metadata"]["uid"] / "index.html"
    assert written.read_text().strip() == PAGE, "the pod (uid 10001) wrote its volume"
    assert written.stat().st_uid == 10001


def test_a_service_answers_by_cluster_ip_and_dns_name_from_another_pod(
    cluster: Cluster, real_node: RealNode, namespace: str
):
    server = web_server(real_node, "web")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    server["metadata"]["namespace"] = namespace
    cluster.apply(server, service)
    wait_ready(cluster, namespace, "web")
    cluster_ip = get(cluster, "service", "web", namespace)["spec"]["clusterIP"]
    name = f"web.{namespace}.svc.cluster.local"
    # kube-proxy programs a new Service within a second or so: the client retries.
    client = pod(
        real_node,
        "client",
        "for i in $(seq 30); do "
        f"wget -qO- http://{cluster_ip}/index.html && nslookup {name} && "
        f"wget -qO- http://{name}/index.html && exit 0; sleep 1; done; exit 1",
        restart="Never",
    )
    client["metadata"]["namespace"] = namespace
    cluster.apply(client)

    finished = wait_finished(cluster, namespace, "client")

    logs = cluster.kubectl("logs", "-n", namespace, "client").stdout
    assert finished["exitCode"] == 0, logs
    assert logs.count(PAGE) == 2, logs  # by ClusterIP, then by name
    assert cluster_ip in logs, f"nslookup {name} did not answer the ClusterIP:\n{logs}"


def test_kubectl_logs_exec_and_port_forward_reach_the_pod(
    cluster: Cluster, real_node: RealNode, namespace: str
):
    server = web_server(real_node, "web")
    server["metadata"]["namespace"] = namespace
    cluster.apply(server)
    wait_ready(cluster, namespace, "web")

    logs = cluster.kubectl("logs", "-n", namespace, "web").stdout
    in_pod = cluster.kubectl("exec", "-n", namespace, "web", "--", "id", "-u").stdout
    with port_forward(cluster, namespace, "pod/web", 8080) as local:
        page = fetch_local(local)

    assert "serving /tmp/www" in logs
    assert in_pod.strip() == "10001"
    assert page.strip() == PAGE


def test_a_pod_over_its_memory_limit_is_oom_killed(
    cluster: Cluster, real_node: RealNode, namespace: str
):
    # tail keeps every byte of a line that never ends.
    hog = pod(
        real_node,
        "hog",
        "head -c 512m /dev/zero | tail",
        restart="Never",
        resources={"limits": {"memory": "32Mi", "cpu": "500m"}},
    )
    hog["metadata"]["namespace"] = namespace
    cluster.apply(hog)

    finished = wait_finished(cluster, namespace, "hog")

    assert finished["exitCode"] == 137, finished
    assert finished.get("reason") == "OOMKilled", finished


def test_a_pod_reaches_the_apiserver_through_the_kubernetes_service(
    cluster: Cluster, real_node: RealNode, namespace: str
):
    # In-cluster config: the ServiceAccount's token and CA, the Service's address from the
    # environment; then by name, as a client configured with kubernetes.default.svc would.
    client = pod(
        real_node,
        "in-cluster",
        "in-cluster-whoami && in-cluster-whoami https://kubernetes.default.svc",
        restart="Never",
    )
    client["metadata"]["namespace"] = namespace
    cluster.apply(client)

    finished = wait_finished(cluster, namespace, "in-cluster")

    logs = cluster.kubectl("logs", "-n", namespace, "in-cluster").stdout
    assert finished["exitCode"] == 0, logs
    answers = [json.loads(line) for line in logs.splitlines()]
    assert [a["status"]["userInfo"]["username"] for a in answers] == [
        f"system:serviceaccount:{namespace}:default"
    ] * 2


def test_the_host_keeps_its_forwarding_and_kernel_settings(
    real_node: RealNode, host_settings_before_the_node: dict[str, str]
):
    assert host_settings() == host_settings_before_the_node
    # kubelet did set its tunables: on the stand-ins in the node's mount namespace.
    stand_in = Path(real_node.workdir, "tunables", "vm.overcommit_memory")
    assert stand_in.read_text().strip() == "1"
