"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok (simulated nodes and pods).

Each program comes from $KUBEBUILDER_ASSETS when that folder holds it (the envtest
convention); scripts/build-testground.sh builds the others from their Go modules into a
cache outside the repo.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import random
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from testground.certs import Pki
from testground.processes import KubectlError, Process, StartupError, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-testground.sh"
STAGES = Path(__file__).with_name("kwok-stages.yaml")
log = logging.getLogger(__name__)
PROGRAMS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "helm",
)
# Which target of scripts/build-testground.sh builds each program, in the script's order.
BUILD_TARGETS = ("etcd", "kubernetes", "kwok", "helm")
BUILT_BY = {
    "etcd": "etcd",
    "kube-apiserver": "kubernetes",
    "kube-controller-manager": "kubernetes",
    "kube-scheduler": "kubernetes",
    "kubectl": "kubernetes",
    "kwok": "kwok",
    "helm": "helm",
}
SERVICE_CIDR = "10.0.0.0/24"
# kwok's nodes carry this taint, so only pods that tolerate it (kwok_placement()) land there;
# any other pod goes to a real node, as on a user's cluster.
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
# The real node's link to the host (tests/testground/node.py) is a /30 of this range, one per
# plane, chosen when the plane starts because the apiserver's certificate names its host end.
NODE_LINKS = ipaddress.ip_network("10.213.0.0/16")
# Every request a ServiceAccount makes, at Metadata level: the least-privilege tests compare
# what the operator's identity used with what its chart grants. Lists of Secrets with what
# they answered, so a test can show the operator got names, never values.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "RequestResponse",
            "userGroups": ["system:serviceaccounts"],
            "verbs": ["list"],
            "resources": [{"group": "", "resources": ["secrets"]}],
        },
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


@dataclass(frozen=True)
class Tuning:
    """How much the ground's own programs may do at once. The defaults are what the tests
    have always run with; SCALE lets a benchmark with thousands of objects measure the
    operator rather than the ground's client rate limits."""

    # The kubernetes Service takes the first address; the apiserver's certificate names it.
    service_cidr: str = SERVICE_CIDR
    nodes: int = 2
    # What each kwok node offers: engine pods request a core and a GiB or so each.
    pods_per_node: int = 110
    cpu_per_node: str = "32"
    memory_per_node: str = "256Gi"
    # --kube-api-qps / --kube-api-burst of kube-controller-manager and kube-scheduler (None:
    # their defaults, 20/30 and 50/100). kwok's client has no rate limit of its own.
    client_qps: int | None = None
    client_burst: int | None = None
    # kube-controller-manager's --concurrent-{deployment,replicaset,endpoint,
    # service-endpoint}-syncs (None: its defaults, 5 each).
    concurrent_syncs: int | None = None
    # kwok's podPlayStageParallelism and nodePlayStageParallelism (None: its default, 4).
    kwok_parallelism: int | None = None

    def client_args(self) -> list[str]:
        args = []
        if self.client_qps is not None:
            args.append(f"--kube-api-qps={self.client_qps}")
        if self.client_burst is not None:
            args.append(f"--kube-api-burst={self.client_burst}")
        return args

    def controller_manager_args(self) -> list[str]:
        args = self.client_args()
        if self.concurrent_syncs is not None:
            args += [
                f"--concurrent-{kind}-syncs={self.concurrent_syncs}"
                for kind in ("deployment", "replicaset", "endpoint", "service-endpoint")
            ]
        return args

    def kwok_configuration(self) -> dict | None:
        if self.kwok_parallelism is None:
            return None
        return {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokConfiguration",
            "options": {
                "podPlayStageParallelism": self.kwok_parallelism,
                "nodePlayStageParallelism": self.kwok_parallelism,
            },
        }


# 4,000 agents' Services fit in a /16 (the first address is still 10.0.0.1); 4,000+ pods on
# four nodes of 1,100 pods, 2,000 cores and 8 TiB each; the controller-manager and
# scheduler at 400 QPS (20x and 8x their defaults), the controllers and kwok with 4x
# their default workers.
SCALE = Tuning(
    service_cidr="10.0.0.0/16",
    nodes=4,
    pods_per_node=1100,
    cpu_per_node="2000",
    memory_per_node="8Ti",
    client_qps=400,
    client_burst=800,
    concurrent_syncs=20,
    kwok_parallelism=16,
)


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _build(targets: list[str]) -> Path:
    """Run scripts/build-testground.sh for `targets` (a second run costs seconds); returns
    the cache's assets folder it prints last."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *targets],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StartupError(f"building the control plane failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _link_folder(sources: dict[str, Path], cache: Path) -> Path:
    """A folder of symlinks, one per program, so callers keep using `folder / name`. Named
    by what it points at, and relinked atomically, so concurrent sessions agree."""
    key = hashlib.sha256(repr(sorted(sources.items())).encode()).hexdigest()[:12]
    folder = cache / f"assets-mixed-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    for program, source in sources.items():
        link = folder / program
        if link.is_symlink() and Path(os.readlink(link)) == source:
            continue
        tmp = folder / f".{program}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(source)
        os.replace(tmp, link)
    return folder


def find_binaries() -> Path:
    """The folder holding every program the plane needs. Each program comes from
    $KUBEBUILDER_ASSETS when it is there (a standard envtest folder holds etcd,
    kube-apiserver and kubectl), the others from scripts/build-testground.sh's cache,
    building only what that takes. Which came from where is logged at INFO."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    folder = Path(assets).expanduser().absolute() if assets else None
    given = {p: folder / p for p in PROGRAMS if folder and _runnable(folder / p)}
    missing = [p for p in PROGRAMS if p not in given]
    if folder and not missing:
        log.info("test ground: every program from KUBEBUILDER_ASSETS=%s", assets)
        return folder
    targets = [t for t in BUILD_TARGETS if any(BUILT_BY[p] == t for p in missing)]
    built = _build(targets)
    lacking = [p for p in missing if not _runnable(built / p)]
    if lacking:
        raise StartupError(f"{built} lacks {lacking} after the build")
    if given:
        log.info("test ground: %s from KUBEBUILDER_ASSETS=%s", ", ".join(given), assets)
    elif assets:
        log.info("test ground: KUBEBUILDER_ASSETS=%s holds none of %s", assets, PROGRAMS)
    log.info("test ground: %s from the build cache %s", ", ".join(missing), built)
    if not given:
        return built
    sources = {p: given.get(p, built / p) for p in PROGRAMS}
    return _link_folder(sources, built.parent)


def _host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address in or a route to."""
    nets = []
    for cmd in (["ip", "-j", "-4", "addr"], ["ip", "-j", "-4", "route"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        for entry in json.loads(out or "[]"):
            for a in entry.get("addr_info", []):
                nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
            dst = entry.get("dst")
            if dst and dst != "default":
                nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def free_node_link() -> tuple[str, str]:
    """(host end, node end) of a /30 in NODE_LINKS that nothing on the host uses."""
    used = _host_networks()
    links = list(NODE_LINKS.subnets(new_prefix=30))
    for link in random.sample(links, 64):
        if not any(link.overlaps(n) for n in used):
            host, node = list(link.hosts())
            return str(host), str(node)
    raise StartupError(f"no free /30 in {NODE_LINKS} for the real node")


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> dict:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testground",
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": "testground", "context": {"cluster": "testground", "user": user}}],
        "current-context": "testground",
    }


@dataclass
class ControlPlane:
    """Start with `start()`; `kubeconfig_path` is an admin kubeconfig; `stop()` ends it all."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="testground-")))
    tuning: Tuning = field(default_factory=Tuning)
    processes: list[Process] = field(default_factory=list)
    bin_dir: Path | None = None
    kubeconfig_path: Path | None = None
    server: str = ""
    api_port: int = 0
    pki: Pki | None = None
    # (host end, node end) of the real node's link; see NODE_LINKS.
    node_link: tuple[str, str] = ("", "")
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def _bin(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def _spawn(self, name: str, argv: list[str]) -> Process:
        p = Process(name, argv, self.workdir / "logs" / f"{name}.log")
        p.start()
        self.processes.append(p)
        return p

    def start(self) -> ControlPlane:
        t0 = time.monotonic()
        self.bin_dir = find_binaries()
        self.timings["binaries"] = time.monotonic() - t0
        t1 = time.monotonic()
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.node_link = free_node_link()
        pki = self.pki = Pki.create(self.workdir / "pki", apiserver_ips=(self.node_link[0],))
        try:
            self._start_processes(pki)
        except BaseException:
            self.stop()
            raise
        self.timings["startup"] = time.monotonic() - t1
        return self

    def _start_processes(self, pki: Pki) -> None:
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        self.api_port = api_port
        etcd = self._spawn(
            "etcd",
            [
                self._bin("etcd"),
                "--name",
                "testground",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"testground=http://127.0.0.1:{etcd_peer}",
                # A throwaway cluster: durability buys nothing and fsync costs seconds.
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        self.server = f"https://127.0.0.1:{api_port}"
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        apiserver = self._spawn(
            "kube-apiserver",
            [
                self._bin("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki.apiserver[0]}",
                f"--tls-private-key-file={pki.apiserver[1]}",
                f"--client-ca-file={pki.ca.cert_path}",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={self.tuning.service_cidr}",
                # On loopback there is no real endpoint for the kubernetes Service to reconcile.
                "--endpoint-reconciler-type=none",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",
                f"--requestheader-client-ca-file={pki.front_proxy_ca.cert_path}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_client[0]}",
                f"--proxy-client-key-file={pki.front_proxy_client[1]}",
                # logs, exec and port-forward reach a real node's kubelet at its InternalIP
                # (never by name: that would be a DNS lookup).
                f"--kubelet-client-certificate={pki.admin[0]}",
                f"--kubelet-client-key={pki.admin[1]}",
                "--kubelet-preferred-address-types=InternalIP",
                "--v=1",
            ],
        )
        self.kubeconfig_path = self.workdir / "admin.kubeconfig"
        self.kubeconfig_path.write_text(
            yaml.safe_dump(kubeconfig(self.server, pki.ca.cert_path, *pki.admin, user="admin"))
        )
        wait_until("kube-apiserver /readyz", self.readyz, 120, [etcd, apiserver])
        kc = str(self.kubeconfig_path)
        common = [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                self._bin("kube-controller-manager"),
                *common,
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert_path}",
                f"--cluster-signing-cert-file={pki.ca.cert_path}",
                f"--cluster-signing-key-file={pki.ca.key_path}",
                f"--service-cluster-ip-range={self.tuning.service_cidr}",
                "--use-service-account-credentials=false",
                *self.tuning.controller_manager_args(),
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                self._bin("kube-scheduler"),
                *common,
                f"--secure-port={free_port()}",
                *self.tuning.client_args(),
                "--v=1",
            ],
        )
        self._spawn(
            "kwok",
            [
                self._bin("kwok"),
                f"--config={STAGES}",
                f"--kubeconfig={kc}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.0/16",
                "--node-ip=127.0.0.1",
                f"--server-address=127.0.0.1:{free_port()}",
                *self._kwok_configuration(),
            ],
        )
        self._create_nodes()
        self.wait_for_nodes_ready()
        self.kubectl(
            "wait", "--for=create", "serviceaccount/default", "-n", "default", "--timeout=60s"
        )

    def _kwok_configuration(self) -> list[str]:
        """A second --config for kwok when the tuning sets its options."""
        configuration = self.tuning.kwok_configuration()
        if configuration is None:
            return []
        path = self.workdir / "kwok-configuration.yaml"
        path.write_text(yaml.safe_dump(configuration))
        return [f"--config={path}"]

    def _create_nodes(self) -> None:
        nodes = []
        t = self.tuning
        offered = {"cpu": t.cpu_per_node, "memory": t.memory_per_node, "pods": str(t.pods_per_node)}
        for i in range(self.tuning.nodes):
            name = f"kwok-node-{i}"
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            "kwok.x-k8s.io/node": "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                        },
                    },
                    "spec": {"taints": [KWOK_TAINT]},
                    "status": {
                        "allocatable": offered,
                        "capacity": offered,
                    },
                }
            )
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(nodes))

    def wait_for_nodes_ready(self, timeout: int = 60) -> None:
        self.kubectl("wait", "--for=condition=Ready", "node", "--all", f"--timeout={timeout}s")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        assert self.kubeconfig_path is not None
        result = subprocess.run(
            [self._bin("kubectl"), f"--kubeconfig={self.kubeconfig_path}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    def readyz(self) -> bool:
        """The apiserver answers /readyz with 200 (as the admin)."""
        assert self.pki is not None
        ssl_ctx = ssl.create_default_context(cafile=str(self.pki.ca.cert_path))
        ssl_ctx.load_cert_chain(*self.pki.admin)
        with urllib.request.urlopen(f"{self.server}/readyz", context=ssl_ctx, timeout=5) as r:
            return r.status == 200

    def process(self, name: str) -> Process:
        """One of the plane's programs, by name (etcd, kube-apiserver, ...)."""
        return next(p for p in self.processes if p.name == name)

    def restart_apiserver(self, timeout: float = 120) -> float:
        """Stop kube-apiserver (SIGTERM, as a rolling control-plane upgrade does) and start it
        again with the same flags; returns the seconds until /readyz answered again. Every
        client's connections and watch streams are cut by it."""
        apiserver = self.process("kube-apiserver")
        began = time.monotonic()
        apiserver.stop()
        apiserver.start()
        wait_until("kube-apiserver /readyz after a restart", self.readyz, timeout, [apiserver])
        return time.monotonic() - began

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """SIGSTOP one program for the block, SIGCONT after it (even when the block fails):
        a process that hangs, as etcd does on a stalled disk, without losing its state."""
        process = self.process(name)
        assert process.popen is not None and process.alive()
        os.kill(process.popen.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(process.popen.pid, signal.SIGCONT)

    def alive(self) -> list[str]:
        return [p.name for p in self.processes if not p.alive()]

    def stop(self) -> None:
        # Reverse start order: clients first, etcd last.
        for p in reversed(self.processes):
            p.stop()
        self.processes.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
