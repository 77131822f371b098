"""A real node beside kwok's: kubelet, containerd with runc, the CNI bridge, kube-proxy and
CoreDNS (scripts/build-node.sh builds them), for pods that must really run.

Everything it does stays inside namespaces the test ground creates:

- a network namespace `voice-node-<id>` with one veth to the host, a /30 of its own
  (ControlPlane.node_link) and no default route. The apiserver listens on the host's
  127.0.0.1; a socat forwarder bound only to the host end of the veth carries the node's
  traffic to it, and the default/kubernetes Service points there, so in-cluster clients
  find it as on any cluster. From inside, only that port of the host end is reachable.
- a mount namespace with fresh tmpfs over /run, /var/lib and /var/log (shim sockets, pod
  network namespaces, CNI state, pod logs) and stand-in files over the kernel tunables
  kubelet sets, so the host's values stay as they were.
- pods' cgroups under /voice-node-<id> of every cgroup hierarchy.

`stop()` ends every process it started, their pods and shims, and removes both
namespaces, the veth, the cgroups and the work folder: nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from testground.certs import Pki
from testground.controlplane import REPO, ControlPlane, kubeconfig
from testground.processes import Process, StartupError, wait_until

BUILD_SCRIPT = REPO / "scripts" / "build-node.sh"
PROGRAMS = ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr", "coredns")
PAUSE_ARCHIVE = "pause-image.tar"
SMOKE_ARCHIVE = "smoke-image.tar"
POD_CIDR = "10.246.0.0/24"  # inside the node's namespace; clear of kwok's 10.244.0.0/16
CLUSTER_DOMAIN = "cluster.local"
CNI_PLUGINS = "/usr/lib/cni"  # Debian's containernetworking-plugins
RUNC = "/usr/sbin/runc"  # Debian's; crun fails on this host's hybrid cgroups
# The kernel tunables kubelet sets when it starts (vm.overcommit_memory=1, kernel.panic=10,
# ...): in the node's mount namespace each is a stand-in file holding the host's value.
KERNEL_TUNABLES = (
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Fresh in the node's mount namespace: what containerd, runc, CNI and kubelet write outside
# the folders they are given.
PRIVATE_DIRS = ("/run", "/var/lib", "/var/log")
COREDNS_ROLE = "testground:coredns"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
log = logging.getLogger(__name__)


def build_node_programs() -> Path:
    """Run scripts/build-node.sh (seconds when cached); returns the assets folder."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=False, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise StartupError(f"building the real node failed:\n{result.stderr[-4000:]}")
    folder = Path(result.stdout.strip().splitlines()[-1])
    wanted = (*PROGRAMS, PAUSE_ARCHIVE, SMOKE_ARCHIVE)
    lacking = [p for p in wanted if not (folder / p).exists()]
    if lacking:
        raise StartupError(f"{folder} lacks {lacking} after scripts/build-node.sh")
    return folder


def archive_images(path: Path) -> list[str]:
    """The names a docker archive tags (its manifest.json's RepoTags)."""
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            raise StartupError(f"{path} is not a docker archive (no manifest.json)")
        return [tag for entry in json.load(member) for tag in entry.get("RepoTags") or []]


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if check and result.returncode != 0:
        raise StartupError(f"{' '.join(argv)} failed: {(result.stderr or result.stdout).strip()}")
    return result


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _procs_files(cgroup: Path) -> list[Path]:
    """Every cgroup.procs below `cgroup`; kubelet and the shims remove cgroups while we
    walk, and os.walk passes over what vanished (Path.rglob raises)."""
    return [Path(d) / "cgroup.procs" for d, _, files in os.walk(cgroup) if "cgroup.procs" in files]


def _cgroup_mounts() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, named ones, the unified)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            mounts.append(Path(left.split()[4]))
    return mounts


def _http_ok(url: str) -> bool:
    # No proxies: the address is inside the node's network namespace.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as r:
        return r.status == 200


@dataclass
class RealNode:
    """One real kubelet node of a local ControlPlane, labelled type=real and untainted, so
    pods without placement land on it. `start()` and `stop()` like the plane;
    `load_image(docker_archive)` makes an image available to its pods (no registry)."""

    plane: ControlPlane
    name: str = "real-node-0"
    id: str = field(default_factory=lambda: f"voice-node-{uuid.uuid4().hex[:8]}")
    # Short: unix socket paths (containerd's, kubelet's) must stay under 108 bytes.
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vn-", dir="/tmp")))
    bin_dir: Path | None = None
    pause_image: str = ""
    smoke_image: str = ""
    processes: list[Process] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _holder: Process | None = None
    _forwarder: Process | None = None
    _loaded: dict[Path, tuple[int, int]] = field(default_factory=dict)
    _netns: bool = False
    _cgroups: list[Path] = field(default_factory=list)

    @property
    def host_ip(self) -> str:
        """The host's end of the veth: the socat forwarder to the apiserver listens here."""
        return self.plane.node_link[0]

    @property
    def ip(self) -> str:
        """The node's InternalIP (its end of the veth); kubelet, CoreDNS listen here."""
        return self.plane.node_link[1]

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        return f"/{self.id}"

    def _veths(self) -> tuple[str, str]:
        suffix = self.id.removeprefix("voice-node-")
        return f"vnh-{suffix}", f"vnn-{suffix}"

    def _bin(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def _nsenter(self) -> list[str]:
        assert self._holder and self._holder.popen
        return [
            "nsenter",
            f"--net=/run/netns/{self.id}",
            f"--mount=/proc/{self._holder.popen.pid}/ns/mnt",
            "--",
        ]

    def _spawn(self, name: str, argv: list[str]) -> Process:
        p = Process(
            name,
            [*self._nsenter(), *argv],
            self.workdir / "logs" / f"{name}.log",
            env={"PATH": f"{self.bin_dir}:{PATH}"},
        )
        p.start()
        self.processes.append(p)
        return p

    # ---- start -------------------------------------------------------------------------

    def start(self) -> RealNode:
        assert self.plane.pki and self.plane.node_link[0], "start the ControlPlane first"
        t0 = time.monotonic()
        self.bin_dir = build_node_programs()
        self.timings["binaries"] = time.monotonic() - t0
        t1 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.timings["startup"] = time.monotonic() - t1
        log.info("real node %s (%s) up in %.1f s", self.name, self.id, self.timings["startup"])
        return self

    def _start(self) -> None:
        assert self.bin_dir is not None and self.plane.pki is not None
        for d in ("logs", "pki", "cni", "cni-ipam", "kubelet", "tunables", "cdi"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        self.pause_image = archive_images(self.bin_dir / PAUSE_ARCHIVE)[0]
        self.smoke_image = archive_images(self.bin_dir / SMOKE_ARCHIVE)[0]
        self._network()
        self._make_cgroups()
        self._mount_namespace()
        self._start_forwarder()
        self._apply_api_objects()
        kubeconfigs = self._credentials(self.plane.pki)
        containerd = self._spawn(
            "containerd", [self._bin("containerd"), "--config", str(self._containerd_config())]
        )

        def serving() -> bool:
            return self.socket.exists() and self._ctr("version").returncode == 0

        wait_until("containerd", serving, 60, [containerd])
        self.load_image(self.bin_dir / PAUSE_ARCHIVE)
        self.load_image(self.bin_dir / SMOKE_ARCHIVE)
        coredns = self._spawn(
            "coredns", [self._bin("coredns"), "-conf", str(self._corefile(kubeconfigs["coredns"]))]
        )
        kubelet = self._spawn("kubelet", self._kubelet_argv(kubeconfigs["kubelet"]))
        proxy = self._spawn(
            "kube-proxy",
            [self._bin("kube-proxy"), f"--config={self._proxy_config(kubeconfigs['kube-proxy'])}"],
        )
        everything = [containerd, coredns, kubelet, proxy]

        def ready() -> bool:
            out = self.plane.kubectl("get", "node", self.name, "-o", "json", check=False)
            if out.returncode:
                return False
            conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_until(f"node {self.name} Ready", ready, 120, everything, poll=0.5)
        wait_until(
            "kube-proxy", lambda: _http_ok(f"http://{self.ip}:10256/healthz"), 60, everything
        )
        wait_until("CoreDNS", lambda: _http_ok(f"http://{self.ip}:8181/ready"), 60, everything)

    def _network(self) -> None:
        """The node's network namespace and its veth to the host: a /30, nothing else."""
        host_veth, node_veth = self._veths()
        ns = self.id
        _run("ip", "netns", "add", ns)
        self._netns = True
        _run("ip", "link", "add", host_veth, "type", "veth", "peer", "name", node_veth, "netns", ns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", host_veth)
        _run("ip", "link", "set", host_veth, "up")
        _run("ip", "-n", ns, "addr", "add", f"{self.ip}/30", "dev", node_veth)
        _run("ip", "-n", ns, "link", "set", node_veth, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        # Forwarding between the pods' bridge and the veth is the node namespace's own.
        _run("nsenter", f"--net=/run/netns/{ns}", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        # From the node, of the host end only the apiserver's forwarder answers (replies
        # to the host's own connections, to kubelet or CoreDNS, pass).
        guard = "VOICE-NODE-GUARD"
        rules = [
            ["-N", guard],
            ["-A", guard, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
            ["-A", guard, "-p", "tcp", "--dport", str(self.plane.api_port), "-j", "RETURN"],
            ["-A", guard, "-j", "REJECT"],
            ["-I", "OUTPUT", "-d", self.host_ip, "-j", guard],
            ["-I", "FORWARD", "-d", self.host_ip, "-j", guard],
        ]
        for rule in rules:
            _run("nsenter", f"--net=/run/netns/{ns}", "iptables", "-w", *rule)

    def _make_cgroups(self) -> None:
        """kubelet's cgroupRoot, in every hierarchy (it must exist; kubelet makes the rest)."""
        for mount in _cgroup_mounts():
            path = mount / self.id
            path.mkdir()
            self._cgroups.append(path)
            for name in ("cpuset.cpus", "cpuset.mems"):  # empty in a new v1 cpuset
                if (mount / name).exists() and (path / name).exists():
                    (path / name).write_text((mount / name).read_text())

    def _mount_namespace(self) -> None:
        """A mount namespace held by a sleeping process; every node program joins it."""
        own = _inode("/proc/self/ns/mnt")
        self._holder = Process(
            "mount-namespace",
            ["unshare", "--mount", "--propagation", "slave", "sleep", "infinity"],
            self.workdir / "logs" / "mount-namespace.log",
        )
        self._holder.start()
        pid = self._holder.popen.pid if self._holder.popen else 0

        def unshared() -> bool:
            return _inode(f"/proc/{pid}/ns/mnt") not in (None, own)

        wait_until("the node's mount namespace", unshared, 10, [self._holder], poll=0.02)
        script = ["set -e"]
        script += [f"mount -t tmpfs -o mode=755 voice-node {d}" for d in PRIVATE_DIRS]
        for name in KERNEL_TUNABLES:
            real = Path("/proc/sys") / name
            stand_in = self.workdir / "tunables" / name.replace("/", ".")
            stand_in.write_text(real.read_text())
            script.append(f"mount --bind {stand_in} {real}")
        _run("nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", "sh", "-c", "\n".join(script))

    def _start_forwarder(self) -> None:
        port = self.plane.api_port
        self._forwarder = Process(
            "apiserver-forwarder",
            [
                "socat",
                f"TCP-LISTEN:{port},bind={self.host_ip},reuseaddr,fork",
                f"TCP:127.0.0.1:{port}",
            ],
            self.workdir / "logs" / "apiserver-forwarder.log",
        )
        self._forwarder.start()

    def _apply_api_objects(self) -> None:
        """default/kubernetes's endpoints (the forwarder; the plane runs with
        --endpoint-reconciler-type=none) and CoreDNS's read access."""
        port = self.plane.api_port
        objects = [
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {
                        "kubernetes.io/service-name": "kubernetes",
                        "endpointslice.kubernetes.io/managed-by": "testground.voiceops.dev",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [self.host_ip], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": COREDNS_ROLE},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": COREDNS_ROLE},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": COREDNS_ROLE,
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "system:coredns",
                    }
                ],
            },
        ]
        self.plane.kubectl(
            "apply",
            "--server-side",
            "--field-manager=testground",
            "-f",
            "-",
            input=yaml.safe_dump_all(objects),
        )

    def _credentials(self, pki: Pki) -> dict[str, Path]:
        """Client certificates from the plane's CA, and a kubeconfig for each program that
        reaches the apiserver through the forwarder (its certificate names host_ip)."""
        identities = {
            "kubelet": (f"system:node:{self.name}", ("system:nodes",)),
            "kube-proxy": ("system:kube-proxy", ()),
            "coredns": ("system:coredns", ()),
        }
        server = f"https://{self.host_ip}:{self.plane.api_port}"
        kubeconfigs = {}
        for program, (user, groups) in identities.items():
            cert, key = pki.ca.issue(self.workdir / "pki", program, user, organizations=groups)
            path = self.workdir / f"{program}.kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(server, pki.ca.cert_path, cert, key, user)))
            kubeconfigs[program] = path
        return kubeconfigs

    def _containerd_config(self) -> Path:
        w = self.workdir
        cni = {
            "cniVersion": "1.0.0",
            "name": "voice-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(w / "cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (w / "cni" / "10-voice-node.conflist").write_text(json.dumps(cni, indent=2))
        config = f"""\
version = 3
root = "{w}/containerd/root"
state = "{w}/containerd/state"
temp = "{w}/containerd/tmp"
imports = []
# Nothing under /opt or /etc/nri, no NRI socket.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri"]

[grpc]
  address = "{self.socket}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{self.pause_image}"

[plugins."io.containerd.cri.v1.runtime"]
  # No CAP_SYS_RESOURCE here: without this runc fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_cdi = false
  cdi_spec_dirs = ["{w}/cdi"]
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_PLUGINS}"]
    conf_dir = "{w}/cni"

[plugins."io.containerd.image-verifier.v1.bindir"]
  bin_dir = "{w}/image-verifiers"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
        path = w / "containerd.toml"
        path.write_text(config)
        return path

    def _corefile(self, kubeconfig_path: Path) -> Path:
        """Cluster names only: every other name is NXDOMAIN (no upstream to forward to)."""
        corefile = f"""\
{CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
    bind {self.ip}
    errors
    ready {self.ip}:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig_path} testground
        pods insecure
        ttl 5
    }}
}}
. {{
    bind {self.ip}
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""
        path = self.workdir / "Corefile"
        path.write_text(corefile)
        return path

    def _kubelet_argv(self, kubeconfig_path: Path) -> list[str]:
        assert self.plane.pki is not None
        w = self.workdir
        resolv = w / "resolv.conf"
        resolv.write_text(f"nameserver {self.ip}\n")
        lax = "1%"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.pki.ca.cert_path)},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            # 1.36 refuses this host's cgroup v1 (hybrid) mounts otherwise.
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "clusterDNS": [self.ip],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(resolv),
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": lax,
                "nodefs.inodesFree": lax,
                "imagefs.available": lax,
                "imagefs.inodesFree": lax,
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "rotateCertificates": False,
        }
        path = w / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        return [
            self._bin("kubelet"),
            f"--config={path}",
            f"--kubeconfig={kubeconfig_path}",
            f"--root-dir={w / 'kubelet'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.ip}",
            "--node-labels=type=real",
            "--v=1",
        ]

    def _proxy_config(self, kubeconfig_path: Path) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig_path)},
            "hostnameOverride": self.name,
            "bindAddress": self.ip,
            "healthzBindAddress": f"{self.ip}:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "nodePortAddresses": [f"{self.ip}/32"],
            # Pod -> ClusterIP -> pod on the same bridge: the reply must come back through
            # the node's conntrack, so every Service connection is masqueraded.
            "iptables": {"masqueradeAll": True, "localhostNodePorts": False},
            # Zero: leave the global conntrack sysctls alone (they are not the node's).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    # ---- images --------------------------------------------------------------------------

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                self._bin("ctr"),
                f"--address={self.socket}",
                "--connect-timeout=5s",
                "--namespace=k8s.io",
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )

    def load_image(self, path: Path) -> list[str]:
        """Import a docker archive into the node's containerd (as `ctr images import`);
        a second call with the same unchanged file does nothing. Returns its image names,
        which pods use with imagePullPolicy IfNotPresent or Never."""
        path = Path(path).resolve()
        stat = path.stat()
        names = archive_images(path)
        if self._loaded.get(path) != (stat.st_mtime_ns, stat.st_size):
            result = self._ctr("images", "import", str(path))
            if result.returncode != 0:
                raise StartupError(f"importing {path} failed: {result.stderr.strip()}")
            self._loaded[path] = (stat.st_mtime_ns, stat.st_size)
        return names

    # ---- stop ----------------------------------------------------------------------------

    def _namespaces(self) -> tuple[int | None, int | None]:
        """The inodes of the node's network and mount namespaces."""
        netns = _inode(f"/run/netns/{self.id}") if self._netns else None
        mntns = None
        if self._holder and self._holder.popen and self._holder.alive():
            mntns = _inode(f"/proc/{self._holder.popen.pid}/ns/mnt")
        return netns, mntns

    def _our_pids(self, netns: int | None, mntns: int | None) -> set[int]:
        """Every process in the node's namespaces or under its cgroup root: the node's
        programs, shims, and pods' processes (those have namespaces of their own)."""
        pids: set[int] = set()
        for cgroup in self._cgroups:
            for procs in _procs_files(cgroup):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in procs.read_text().split())
        if netns or mntns:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    net = _inode(f"{entry}/ns/net")
                    mnt = _inode(f"{entry}/ns/mnt")
                    if (netns and net == netns) or (mntns and mnt == mntns):
                        pids.add(int(entry.name))
        pids.discard(os.getpid())
        return pids

    def _kill_all(self, timeout: float = 10) -> None:
        namespaces = self._namespaces()
        deadline = time.monotonic() + timeout
        while (pids := self._our_pids(*namespaces)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for p in [*self.processes, self._holder]:
                if p and p.popen:
                    p.popen.poll()  # reap ours
            time.sleep(0.1)
        if left := self._our_pids(*namespaces):
            log.warning("real node %s: processes %s outlived SIGKILL", self.id, sorted(left))

    def stop(self) -> None:
        """Tear down all it made; safe to call after a failed start, and twice."""
        t0 = time.monotonic()
        by_name = {p.name: p for p in self.processes}
        for name in ("kube-proxy", "kubelet", "coredns"):
            if name in by_name:
                by_name[name].stop(grace=5)
        # Pods' processes first (their shims reap them), then containerd and the rest.
        for cgroup in self._cgroups:
            for procs in _procs_files(cgroup):
                with contextlib.suppress(OSError, ValueError):
                    for pid in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
        if "containerd" in by_name:
            by_name["containerd"].stop(grace=5)
        self._kill_all()
        for p in self.processes:
            p.stop()
        self.processes.clear()
        if self._holder:
            self._holder.stop(grace=1)
            self._holder = None
        if self._forwarder and self._forwarder.popen:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._forwarder.popen.pid, signal.SIGTERM)  # its forks too
            self._forwarder.stop(grace=2)
            self._forwarder = None
        if self._netns:
            _run("ip", "netns", "del", self.id, check=False)
            self._netns = False
        host_veth, _ = self._veths()
        if Path(f"/sys/class/net/{host_veth}").exists():
            _run("ip", "link", "del", host_veth, check=False)
        self._remove_cgroups()
        self._forget_api_objects()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.timings["teardown"] = time.monotonic() - t0

    def _remove_cgroups(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self._cgroups:
            for root in list(self._cgroups):
                dirs = sorted(
                    (d for d in root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)
                )
                for d in [*dirs, root]:
                    with contextlib.suppress(FileNotFoundError, OSError):
                        d.rmdir()
                if not root.exists():
                    self._cgroups.remove(root)
            if self._cgroups and time.monotonic() > deadline:
                log.warning("real node %s: cgroups %s are still busy", self.id, self._cgroups)
                return
            if self._cgroups:
                time.sleep(0.2)

    def _forget_api_objects(self) -> None:
        """The Node, the kubernetes Service's endpoints and CoreDNS's role, while the plane
        still runs (the plane's own teardown makes this moot)."""
        if not self.plane.processes or not self.plane.kubeconfig_path:
            return
        for args in (
            ("node", self.name),
            ("endpointslice", "kubernetes", "-n", "default"),
            ("clusterrolebinding", COREDNS_ROLE),
            ("clusterrole", COREDNS_ROLE),
        ):
            self.plane.kubectl(
                "delete", *args, "--ignore-not-found", "--wait=false", check=False, timeout=30
            )
