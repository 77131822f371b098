"""The test ground: a real control plane the suite starts (default), or the cluster in
$KUBECONFIG when VOICE_TEST_USE_KUBECONFIG=1 (kind, k3d, ...). Either way kwok provides the
nodes our pods land on, so rollouts can succeed or fail on purpose."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import config

from testground.controlplane import (
    KWOK_TAINT,
    REPO,
    STAGES,
    ControlPlane,
    Tuning,
    find_binaries,
)
from testground.node import RealNode
from testground.processes import KubectlError, Process, free_port
from testground.storage import Provisioner, storage_class

CRDS = REPO / "crds"
NEVER_READY = "testground.voiceops.dev/never-ready"
CRASH_LOOP = "testground.voiceops.dev/crash-loop"


def kwok_placement() -> dict:
    """Pod spec fields that put a pod on kwok's nodes in any cluster."""
    return {"nodeSelector": {"type": "kwok"}, "tolerations": [{**KWOK_TAINT, "operator": "Equal"}]}


@dataclass
class Cluster:
    kubeconfig: Path
    bin_dir: Path
    local: bool
    plane: ControlPlane | None = None
    extra: list[Process] = field(default_factory=list)
    provisioner: Provisioner | None = None
    node: RealNode | None = None
    node_error: BaseException | None = None
    _server_version: str = ""

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    def apply(self, *objects: dict, force: bool = False) -> str:
        """Server-side apply as the user would; `force` takes fields others changed."""
        args = ["apply", "--server-side", "--field-manager=testground", "-f", "-"]
        if force:
            args.append("--force-conflicts")
        return self.kubectl(*args, input=yaml.safe_dump_all(objects)).stdout

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`helm template` renders for this cluster's Kubernetes version, as `helm install`
        does against it (offline, Helm assumes 1.20, which the chart's kubeVersion refuses),
        unless the call names one."""
        if args and args[0] == "template" and "--kube-version" not in args:
            args = (*args, "--kube-version", self.server_version())
        result = subprocess.run(
            [str(self.bin_dir / "helm"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    def server_version(self) -> str:
        if not self._server_version:
            answer = json.loads(self.kubectl("version", "-o", "json").stdout)
            self._server_version = answer["serverVersion"]["gitVersion"]
        return self._server_version

    def token_kubeconfig(self, service_account: str, namespace: str, path: Path) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount (a fresh bound token)."""
        token = self.kubectl(
            "create", "token", service_account, "-n", namespace, "--duration=6h"
        ).stdout.strip()
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        user = f"{namespace}/{service_account}"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "testground", "cluster": cluster}],
                    "users": [{"name": user, "user": {"token": token}}],
                    "contexts": [
                        {"name": "sa", "context": {"cluster": "testground", "user": user}}
                    ],
                    "current-context": "sa",
                }
            )
        )
        return path

    @property
    def audit_log(self) -> Path | None:
        return self.plane.audit_log if self.plane else None

    def install_crds(self) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=voice-operator",
            "--timeout=60s",
        )
        # Established is not yet listable: the watch cache answers 429 for a moment.
        deadline = time.monotonic() + 60
        while self.kubectl("get", "modelassets,voiceagents", "-A", check=False).returncode:
            if time.monotonic() > deadline:
                raise TimeoutError("our CRDs never became listable")
            time.sleep(0.2)

    def real_node(self) -> RealNode:
        """The real kubelet node beside kwok's (tests/testground/node.py), started on first
        use, once per session, and stopped by close(). Only beside a local plane: an
        external cluster has nodes of its own. A node that failed to start fails every
        later call the same way, without trying again."""
        if not self.local or self.plane is None:
            raise RuntimeError("the real node runs beside the test ground's own plane only")
        if self.node_error is not None:
            raise RuntimeError("the real node failed to start earlier") from self.node_error
        if self.node is None:
            try:
                self.node = RealNode(self.plane).start()
            except BaseException as e:
                self.node_error = e
                raise
        return self.node

    def close(self) -> None:
        if self.node:
            self.node.stop()
            self.node = None
        if self.provisioner:
            self.provisioner.stop()
        for p in self.extra:
            p.stop()
        if self.plane:
            self.plane.cleanup()


def start_local(tuning: Tuning | None = None) -> Cluster:
    plane = ControlPlane(tuning=tuning or Tuning()).start()
    assert plane.kubeconfig_path
    assert plane.bin_dir
    return Cluster(plane.kubeconfig_path, plane.bin_dir, local=True, plane=plane)


def attach_external(kubeconfig: Path) -> Cluster:
    """Use a running cluster; kwok adds tainted fake nodes that only our test pods tolerate."""
    bin_dir = find_binaries()
    cluster = Cluster(kubeconfig, bin_dir, local=False)
    workdir = Path(tempfile.mkdtemp(prefix="testground-ext-"))
    kwok = Process(
        "kwok",
        [
            str(bin_dir / "kwok"),
            f"--config={STAGES}",
            f"--kubeconfig={kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{free_port()}",
        ],
        workdir / "kwok.log",
    )
    kwok.start()
    cluster.extra.append(kwok)
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"kwok-node-{i}",
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"type": "kwok", "kubernetes.io/hostname": f"kwok-node-{i}"},
            },
            "spec": {"taints": [KWOK_TAINT]},
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            },
        }
        for i in range(2)
    ]
    cluster.apply(*nodes)
    cluster.kubectl("wait", "--for=condition=Ready", "node", "-l", "type=kwok", "--timeout=60s")
    return cluster


def open_cluster(tuning: Tuning | None = None) -> Cluster:
    """`tuning` applies to the test ground's own plane only (see controlplane.Tuning)."""
    if os.environ.get("VOICE_TEST_USE_KUBECONFIG") == "1":
        kubeconfig = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
        cluster = attach_external(Path(kubeconfig))
    else:
        cluster = start_local(tuning)
    try:
        if cluster.local:
            cluster.apply(storage_class())
            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            cluster.provisioner = Provisioner(api).start()
        cluster.install_crds()
    except BaseException:
        cluster.close()
        raise
    return cluster
