"""N VoiceAgents on kwok: the operator's time, CPU, memory and API writes, against two floors
measured in the same run.

    .venv/bin/python benchmarks/scale.py [N ...] [--resync 300] [--idle-seconds 60]

For each N (default 10 100 1000) a fresh test ground starts with controlplane.SCALE's tuning
(a /16 Service range, four kwok nodes of 1,100 pods, the controller-manager, scheduler and
kwok at 400 QPS / 800 burst, the controller-manager's deployment, replicaset and endpoint
controllers at 20 workers), so that the operator rather than the ground's rate limits is
measured. The operator runs as its own process (the `voice-operator` program, as the chart's
ServiceAccount) so its CPU and peak RSS come from /proc; its API requests come from the
apiserver's audit log. Three ModelAssets are made Ready by running their download Jobs'
fetcher (untimed); then:

- N agents are applied (server-side, as many at once as the operator has workers) and timed
  until every agent is Ready; per agent, apply -> all its children exist (p50/p99).
- Idle: a window of --idle-seconds with every agent Ready. By default the window is placed
  to hold one resync tick (waiting for it); the quiet CPU before the window and the window
  give the average over a whole resync period. API writes in the window, and how many
  objects they changed (resourceVersions before and after).
- Restart: the operator SIGKILLed and started again with N present: time until it has read
  every agent and gone quiet, its writes, peak RSS and CPU.
- Floor (a): the exact children the operator made (listed, server fields stripped) applied
  server-side in a fresh namespace, with the same client and concurrency and no operator,
  timed until every Deployment is available (what the agents' Ready waits for).
- Floor (b): a minimal kopf operator (benchmarks/_kopf_floor.py) making one ConfigMap per
  agent: its CPU-seconds per API write, against the operator's CPU per write while creating.

Ratios are against the floors of the same run; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import math
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402
from testground import KWOK_TAINT, Cluster, open_cluster  # noqa: E402
from testground.controlplane import SCALE  # noqa: E402
from testground.harness import (  # noqa: E402
    OPERATOR_ACCOUNT,
    OPERATOR_NAMESPACE,
    VENV_BIN,
    install_operator_identity,
    make_ready_asset,
    operator_process,
    serve_models,
)
from testground.processes import Process, free_port  # noqa: E402

from voice_operator import FIELD_MANAGER  # noqa: E402
from voice_operator.kube import RESOURCES, Kube  # noqa: E402
from voice_operator.render.meta import LABEL_AGENT, LABEL_MANAGED_BY  # noqa: E402

FLOOR_OPERATOR = Path(__file__).with_name("_kopf_floor.py")
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
FLOOR_ACCOUNT = "scale-floor"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
CHILD_KINDS = ("ConfigMap", "Service", "Deployment")  # the operator's apply order
QUIET = 5.0  # seconds without a request that count as "done"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the operator's process, from /proc -------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def pid_of(process: Process) -> int:
    assert process.popen is not None
    return process.popen.pid


def ground_cpu(cluster: Cluster) -> dict[str, float]:
    assert cluster.plane is not None
    return {p.name: cpu_seconds(pid_of(p)) for p in cluster.plane.processes if p.alive()}


# --- the apiserver's audit log ----------------------------------------------------------


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Request:
    at: float
    verb: str
    resource: str  # plural[/subresource]
    name: str

    @property
    def write(self) -> bool:
        return self.verb in WRITES


class Audit:
    """Completed requests of one user, from byte offsets of the audit log."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size

    def requests(self, user: str, start: int, end: int | None = None) -> list[Request]:
        with self.path.open("rb") as f:
            f.seek(start)
            data = f.read() if end is None else f.read(end - start)
        out = []
        for line in data.splitlines():
            with contextlib.suppress(ValueError):
                e = json.loads(line)
                if e.get("stage") != "ResponseComplete" or e["user"]["username"] != user:
                    continue
                ref = e.get("objectRef") or {}
                resource = ref.get("resource", "?") + (
                    f"/{ref['subresource']}" if ref.get("subresource") else ""
                )
                out.append(
                    Request(_epoch(e["stageTimestamp"]), e["verb"], resource, ref.get("name", ""))
                )
        return out

    def wait_quiet(
        self, user: str, start: int, quiet: float = QUIET, timeout: float = 120, writes_only=True
    ) -> float:
        """Wait until `user` made no request (write) for `quiet` s; returns the last one's time."""
        deadline = time.monotonic() + timeout
        last = time.time()
        while time.monotonic() < deadline:
            seen = [
                r.at
                for r in self.requests(user, start)
                if r.verb != "watch" and (r.write or not writes_only)
            ]
            last = max(seen, default=last)
            if time.time() - last >= quiet:
                return last
            time.sleep(1)
        return last


def breakdown(requests: Iterable[Request]) -> str:
    counts = collections.Counter(f"{r.verb} {r.resource}" for r in requests if r.verb != "watch")
    return ", ".join(f"{n} {what}" for what, n in counts.most_common(8)) or "none"


# --- watches from the benchmark ---------------------------------------------------------


class Watcher(threading.Thread):
    """One kind in one namespace: when each object was first seen, its labels, and when
    `ready(obj)` first held (receive times on this host's clock)."""

    def __init__(
        self,
        cluster: Cluster,
        kind: str,
        namespace: str,
        ready: Callable[[dict], bool] | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"watch-{kind}")
        plane = cluster.plane
        assert plane is not None and plane.pki is not None
        self.url = plane.server + RESOURCES[kind].path(namespace)
        self.ssl = ssl.create_default_context(cafile=str(plane.pki.ca.cert_path))
        self.ssl.load_cert_chain(*plane.pki.admin)
        self.ready = ready
        self.first_seen: dict[str, float] = {}
        self.ready_at: dict[str, float] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.stopped = False
        self.start()

    def run(self) -> None:
        version = ""
        with httpx.Client(verify=self.ssl, timeout=httpx.Timeout(10, read=None)) as client:
            while not self.stopped:
                params = {"watch": "1", "timeoutSeconds": "3600"}
                if version:
                    params["resourceVersion"] = version
                try:
                    with client.stream("GET", self.url, params=params) as response:
                        for line in response.iter_lines():
                            event = json.loads(line)
                            if event["type"] == "ERROR":  # 410 Gone: start over
                                version = ""
                                break
                            self._seen(event["object"])
                            version = event["object"]["metadata"]["resourceVersion"]
                except (httpx.HTTPError, ValueError):
                    if self.stopped:
                        return
                    time.sleep(0.5)

    def _seen(self, obj: dict) -> None:
        now = time.time()
        name = obj["metadata"]["name"]
        self.first_seen.setdefault(name, now)
        self.labels[name] = obj["metadata"].get("labels") or {}
        if self.ready and name not in self.ready_at and self.ready(obj):
            self.ready_at[name] = now

    def wait(
        self,
        what: str,
        count: int,
        timeout: float,
        ready: bool = True,
        progress: Callable[[], str] = lambda: "",
    ) -> float:
        """Until `count` objects are (ready | seen); returns the time the last one was.
        Every 30 s a line on stderr says how far it got."""
        seen = self.ready_at if ready else self.first_seen
        start = time.monotonic()
        report = start + 30
        while len(seen) < count:
            now = time.monotonic()
            if now > start + timeout:
                raise TimeoutError(f"{what}: {len(seen)} of {count} after {timeout:.0f} s")
            if now > report:
                report += 30
                print(
                    f"  ... {what}: {len(seen)} of {count} after {now - start:.0f} s; "
                    f"load {os.getloadavg()[0]:.1f}; {progress()}",
                    file=sys.stderr,
                    flush=True,
                )
            time.sleep(0.1)
        return max(seen.values())


def agent_ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"].get("generation") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )


def deployment_available(obj: dict) -> bool:
    s, want = obj.get("status") or {}, obj["spec"]["replicas"]
    return (
        s.get("observedGeneration", 0) >= obj["metadata"]["generation"]
        and s.get("updatedReplicas", 0) == want
        and s.get("availableReplicas", 0) == want
        and s.get("replicas", 0) == want
    )


# --- objects ----------------------------------------------------------------------------


def voice_agent(name: str, namespace: str) -> dict:
    return {
        "apiVersion": "voiceops.dev/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"stt": {"model": "whisper"}, "llm": {"model": "smollm"}, "tts": {"model": "joe"}},
    }


def apply_concurrently(kube: Kube, groups: dict[str, list[dict]], workers: int) -> dict[str, float]:
    """Apply each group's objects in order, `workers` groups at once; when each was done."""
    done: dict[str, float] = {}

    def apply(name: str) -> None:
        for obj in groups[name]:
            kube.apply(obj)
        done[name] = time.time()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(apply, groups))
    return done


SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")
SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision", "pv.kubernetes.io/")


def as_applied(obj: dict, namespace: str) -> dict:
    """`obj` as one would write it: no server fields, no owner, in `namespace`."""
    meta = {k: v for k, v in obj["metadata"].items() if k not in SERVER_META}
    meta.pop("ownerReferences", None)
    meta["namespace"] = namespace
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(SERVER_ANNOTATIONS)
    }
    meta["annotations"] = annotations
    spec = dict(obj.get("spec") or {})
    if obj["kind"] == "Service":  # addresses are the allocator's
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    if obj["kind"] == "PersistentVolumeClaim":  # bound anew by the provisioner
        spec.pop("volumeName", None)
    out = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta}
    if spec:
        out["spec"] = spec
    if "data" in obj:
        out["data"] = obj["data"]
    return out


def children_by_agent(kube: Kube, namespace: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = collections.defaultdict(list)
    for kind in CHILD_KINDS:
        for obj in kube.list(kind, namespace, labels={LABEL_MANAGED_BY: FIELD_MANAGER}):
            if agent := (obj["metadata"].get("labels") or {}).get(LABEL_AGENT):
                groups[agent].append(obj)
    return groups


def resource_versions(kube: Kube, namespace: str) -> dict[str, str]:
    return {
        f"{kind}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
        for kind in (*CHILD_KINDS, "VoiceAgent")
        for o in kube.list(kind, namespace)
    }


def changed(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for k, v in after.items() if before.get(k) != v)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_http(url: str, process: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not http_ok(url):
        if not process.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} never answered {url}:\n{process.log_tail()}")
        time.sleep(0.2)


def namespace(cluster: Cluster, name: str) -> str:
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
    return name


# --- the measurements -------------------------------------------------------------------


@dataclass
class Figures:
    n: int
    ready_s: float = 0
    created_p50: float = 0
    created_p99: float = 0
    children: int = 0
    cpu_create: float = 0
    writes_create: int = 0
    create_breakdown: str = ""
    rss_peak: float = 0
    cpu_total: float = 0
    ground_create: dict[str, float] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    restart: dict[str, Any] = field(default_factory=dict)
    floor_a_s: float = 0
    ground_floor_a: dict[str, float] = field(default_factory=dict)
    floor_b: dict[str, Any] = field(default_factory=dict)
    load: tuple[float, float, float] = (0, 0, 0)  # the host's load average at the end


class Bench:
    def __init__(self, n: int, args: argparse.Namespace) -> None:
        self.n, self.args = n, args
        self.f = Figures(n)
        self.work = Path(tempfile.mkdtemp(prefix=f"bench-scale-{n}-"))
        self.ns = f"scale-{n}"
        self.processes: list[Process] = []

    def run(self) -> Figures:
        os.environ["VOICE_OPERATOR_ENGINE_NODE_SELECTOR"] = json.dumps({"type": "kwok"})
        os.environ["VOICE_OPERATOR_ENGINE_TOLERATIONS"] = json.dumps(
            [{**KWOK_TAINT, "operator": "Equal"}]
        )
        os.environ["VOICE_OPERATOR_RESYNC_SECONDS"] = str(self.args.resync)
        os.environ["VOICE_OPERATOR_WORKERS"] = str(self.args.workers)
        cluster = open_cluster(SCALE)
        self.cluster = cluster
        try:
            assert cluster.plane is not None
            os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
            self.kube = Kube()
            self.audit = Audit(cluster.plane.audit_log)
            self.operator_kubeconfig = install_operator_identity(cluster, self.work)
            namespace(cluster, self.ns)
            operator = self.start_operator()
            with serve_models() as models:
                for name in ("whisper", "smollm", "joe"):
                    make_ready_asset(cluster, self.kube, self.ns, name, models, self.work)
            operator = self.create(operator)
            self.idle(operator)
            operator = self.restart(operator)
            operator.stop()
            self.floor_a()
            self.floor_b()
        finally:
            for process in self.processes:
                process.stop()
            cluster.close()
            shutil.rmtree(self.work, ignore_errors=True)
        self.f.load = os.getloadavg()
        return self.f

    def start_operator(self) -> Process:
        port = free_port()
        operator = operator_process(
            self.ns, self.operator_kubeconfig, self.work / "operator.log", metrics_port=port
        )
        operator.start()
        self.processes.append(operator)
        wait_http(f"http://127.0.0.1:{port}/readyz", operator)
        # The resync task starts with the operator's startup handler, just before /readyz.
        self.resync_origin = time.time()
        return operator

    def create(self, operator: Process) -> Process:
        n, f, pid = self.n, self.f, pid_of(operator)
        self.audit.wait_quiet(OPERATOR_USER, 0, quiet=2)  # the assets' last status writes
        agents = Watcher(self.cluster, "VoiceAgent", self.ns, agent_ready)
        children = {k: Watcher(self.cluster, k, self.ns) for k in CHILD_KINDS}
        time.sleep(1)
        start, cpu0, ground0 = self.audit.offset(), cpu_seconds(pid), ground_cpu(self.cluster)
        t0 = time.time()
        applied = apply_concurrently(
            self.kube,
            {f"a{i:04d}": [voice_agent(f"a{i:04d}", self.ns)] for i in range(n)},
            self.args.workers,
        )
        last_ready = agents.wait(
            "agents Ready",
            n,
            timeout=max(900, 3 * n),
            progress=lambda: f"operator CPU {cpu_seconds(pid) - cpu0:.0f} s",
        )
        f.ready_s = last_ready - t0
        self.audit.wait_quiet(OPERATOR_USER, start)
        f.cpu_create = cpu_seconds(pid) - cpu0
        f.ground_create = {k: v - ground0.get(k, 0) for k, v in ground_cpu(self.cluster).items()}
        requests = self.audit.requests(OPERATOR_USER, start)
        f.writes_create = sum(r.write for r in requests)
        f.create_breakdown = breakdown(requests)
        made: dict[str, float] = {}
        for watcher in children.values():
            for name, at in watcher.first_seen.items():
                agent = watcher.labels[name].get(LABEL_AGENT)
                if agent in applied:
                    made[agent] = max(made.get(agent, 0), at)
                    f.children += 1
        latencies = [made[a] - applied[a] for a in made]
        f.created_p50 = statistics.median(latencies)
        f.created_p99 = percentile(latencies, 99)
        for w in (agents, *children.values()):
            w.stopped = True
        return operator

    def idle(self, operator: Process) -> None:
        pid, window, period = pid_of(operator), self.args.idle_seconds, self.args.resync
        quiet_from, quiet_cpu = time.time(), cpu_seconds(pid)
        start = time.time()
        if self.args.idle_with_resync:
            # The window opens 10 s before the next resync tick that leaves time for that.
            k = math.ceil((time.time() + 10 - self.resync_origin) / period)
            start = self.resync_origin + k * period - 10
            time.sleep(max(0.0, start - time.time() - 3))
        before = resource_versions(self.kube, self.ns)
        time.sleep(max(0.0, start - time.time()))
        quiet_seconds = time.time() - quiet_from
        cpu0, offset = cpu_seconds(pid), self.audit.offset()
        t0 = time.time()
        time.sleep(window)
        cpu1, end = cpu_seconds(pid), self.audit.offset()
        elapsed = time.time() - t0
        after = resource_versions(self.kube, self.ns)
        requests = self.audit.requests(OPERATOR_USER, offset, end)
        ticks = [
            self.resync_origin + k * period
            for k in range(1, int((t0 + elapsed - self.resync_origin) // period) + 1)
        ]
        tick = next((t - t0 for t in ticks if t0 <= t <= t0 + elapsed), None)
        idle: dict[str, Any] = {
            "window": elapsed,
            "cpu": cpu1 - cpu0,
            "percent": 100 * (cpu1 - cpu0) / elapsed,
            "tick": tick,
            "writes": sum(r.write for r in requests),
            "changed": changed(before, after),
            "breakdown": breakdown(requests),
            "agents_read": len(
                {r.name for r in requests if r.resource == "voiceagents" and r.verb == "get"}
            ),
        }
        if quiet_seconds >= 20:
            quiet_rate = (cpu0 - quiet_cpu) / quiet_seconds
            idle["quiet_percent"] = 100 * quiet_rate
            idle["quiet_seconds"] = quiet_seconds
            if tick is not None and period >= elapsed:
                average = (idle["cpu"] + quiet_rate * (period - elapsed)) / period
                idle["average_percent"] = 100 * average
        self.f.idle = idle

    def restart(self, operator: Process) -> Process:
        assert operator.popen is not None
        self.f.rss_peak = peak_rss_mib(pid_of(operator))
        self.f.cpu_total = cpu_seconds(pid_of(operator))
        operator.popen.kill()  # as an OOM kill or a node loss would
        operator.popen.wait()
        before = resource_versions(self.kube, self.ns)
        offset, t0 = self.audit.offset(), time.time()
        operator = self.start_operator()
        deadline = time.monotonic() + max(300, self.n)
        while True:
            requests = self.audit.requests(OPERATOR_USER, offset)
            read = {r.name for r in requests if r.resource == "voiceagents" and r.verb == "get"}
            if len(read) >= self.n or time.monotonic() > deadline:
                break
            time.sleep(1)
        last = self.audit.wait_quiet(OPERATOR_USER, offset, writes_only=False)
        requests = [r for r in self.audit.requests(OPERATOR_USER, offset) if r.at <= last]
        pid = pid_of(operator)
        self.f.restart = {
            "seconds": last - t0,
            "agents_read": len(read),
            "writes": sum(r.write for r in requests),
            "requests": sum(r.verb != "watch" for r in requests),
            "changed": changed(before, resource_versions(self.kube, self.ns)),
            "breakdown": breakdown(requests),
            "rss": peak_rss_mib(pid),
            "cpu": cpu_seconds(pid),
        }
        return operator

    def floor_a(self) -> None:
        source = children_by_agent(self.kube, self.ns)
        ns = namespace(self.cluster, f"floor-a-{self.n}")
        claims = self.kube.list("PersistentVolumeClaim", self.ns)
        for claim in claims:
            self.kube.apply(as_applied(claim, ns))
        self.cluster.kubectl(
            "wait",
            "--for=jsonpath={.status.phase}=Bound",
            "pvc",
            "--all",
            "-n",
            ns,
            "--timeout=60s",
        )
        order = {k: i for i, k in enumerate(CHILD_KINDS)}
        groups = {
            agent: sorted((as_applied(o, ns) for o in objs), key=lambda o: order[o["kind"]])
            for agent, objs in source.items()
        }
        count = sum(1 for objs in source.values() for o in objs if o["kind"] == "Deployment")
        deployments = Watcher(self.cluster, "Deployment", ns, deployment_available)
        time.sleep(1)
        ground0, t0 = ground_cpu(self.cluster), time.time()
        apply_concurrently(self.kube, groups, self.args.workers)
        self.f.floor_a_s = (
            deployments.wait("floor (a) Deployments", count, max(600, 3 * self.n)) - t0
        )
        self.f.ground_floor_a = {
            k: v - ground0.get(k, 0) for k, v in ground_cpu(self.cluster).items()
        }
        deployments.stopped = True

    def floor_b(self) -> None:
        ns = namespace(self.cluster, f"floor-b-{self.n}")
        self.cluster.apply(*floor_identity(ns))
        kubeconfig = self.cluster.token_kubeconfig(
            FLOOR_ACCOUNT, ns, self.work / "floor.kubeconfig"
        )
        port = free_port()
        floor = Process(
            "kopf-floor",
            [
                str(VENV_BIN / "kopf"),
                "run",
                "--standalone",
                f"--namespace={ns}",
                f"--liveness=http://127.0.0.1:{port}/healthz",
                str(FLOOR_OPERATOR),
            ],
            self.work / "floor.log",
            env={"KUBECONFIG": str(kubeconfig)},
        )
        floor.start()
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", floor)
            user = f"system:serviceaccount:{ns}:{FLOOR_ACCOUNT}"
            maps = Watcher(self.cluster, "ConfigMap", ns)
            time.sleep(2)
            pid = pid_of(floor)
            start, cpu0, t0 = self.audit.offset(), cpu_seconds(pid), time.time()
            apply_concurrently(
                self.kube,
                {f"a{i:04d}": [voice_agent(f"a{i:04d}", ns)] for i in range(self.n)},
                self.args.workers,
            )
            # kube-root-ca.crt is there already: N more.
            last = maps.wait("floor (b) ConfigMaps", self.n + 1, max(300, self.n), ready=False)
            self.audit.wait_quiet(user, start)
            requests = self.audit.requests(user, start)
            self.f.floor_b = {
                "seconds": last - t0,
                "cpu": cpu_seconds(pid) - cpu0,
                "writes": sum(r.write for r in requests),
                "breakdown": breakdown(requests),
                "rss": peak_rss_mib(pid),
            }
            maps.stopped = True
        finally:
            floor.stop()


def floor_identity(namespace: str) -> list[dict]:
    """What floor (b)'s operator may do: watch and annotate agents, create ConfigMaps and
    Events, in its namespace only."""
    rules = [
        {
            "apiGroups": ["voiceops.dev"],
            "resources": ["voiceagents"],
            "verbs": ["get", "list", "watch", "patch"],
        },
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    meta = {"name": FLOOR_ACCOUNT, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": FLOOR_ACCOUNT,
            },
            "subjects": [{"kind": "ServiceAccount", "name": FLOOR_ACCOUNT, "namespace": namespace}],
        },
    ]


def ground_line(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())


def report(f: Figures, args: argparse.Namespace) -> None:
    idle, restart, b = f.idle, f.restart, f.floor_b
    per_write = f.cpu_create / max(1, f.writes_create)
    floor_per_write = b["cpu"] / max(1, b["writes"])
    print(f"scale benchmark, N={f.n} VoiceAgents (kwok test ground, tuning SCALE; operator as a")
    print(
        f"  process, {args.workers} workers, resync {args.resync:.0f} s; host load average"
        f" {f.load[0]:.1f} / {f.load[1]:.1f} / {f.load[2]:.1f} at the end)"
    )
    print(f"  apply -> all {f.n} Ready                {f.ready_s:8.1f} s   ({f.children} children)")
    print(
        f"    floor (a): the same children applied, no operator {f.floor_a_s:8.1f} s   "
        f"ratio {f.ready_s / f.floor_a_s:.2f}"
    )
    print(
        f"  apply -> children created, per agent  p50 {f.created_p50:.2f} s"
        f"  p99 {f.created_p99:.2f} s"
    )
    print(
        f"  operator CPU while creating           {f.cpu_create:8.1f} s for"
        f" {f.writes_create} writes = {1000 * per_write:.1f} ms/write"
    )
    print(f"    requests: {f.create_breakdown}")
    print(
        f"    floor (b): minimal kopf, 1 ConfigMap/agent {b['cpu']:6.1f} s for {b['writes']} writes"
        f" = {1000 * floor_per_write:.1f} ms/write in {b['seconds']:.1f} s  "
        f"ratio {per_write / floor_per_write if floor_per_write else float('inf'):.2f}"
    )
    print(f"      requests: {b['breakdown']}")
    print(
        f"  operator RSS peak                     {f.rss_peak:8.0f} MiB"
        f" (floor (b) {b['rss']:.0f} MiB); CPU since start {f.cpu_total:.1f} s"
    )
    tick = (
        f"holds the resync tick at +{idle['tick']:.0f} s"
        if idle["tick"] is not None
        else "holds no resync tick"
    )
    print(
        f"  idle, {idle['window']:.0f} s window ({tick})  CPU {idle['percent']:.1f} %"
        f" ({idle['cpu']:.1f} s); {idle['writes']} writes changing {idle['changed']} objects;"
        f" {idle['agents_read']} agents read"
    )
    print(f"    requests: {idle['breakdown']}")
    if "quiet_percent" in idle:
        average = (
            f"; over a whole resync period {idle['average_percent']:.1f} %"
            if "average_percent" in idle
            else ""
        )
        print(
            f"    quiet {idle['quiet_seconds']:.0f} s before it:"
            f" {idle['quiet_percent']:.2f} %{average}"
        )
    print(
        f"  restart (SIGKILL) with {f.n} present   re-checked in {restart['seconds']:.1f} s "
        f"({restart['agents_read']} agents read); {restart['writes']} writes changing "
        f"{restart['changed']} objects; {restart['requests']} requests"
    )
    print(f"    requests: {restart['breakdown']}")
    print(f"    RSS peak {restart['rss']:.0f} MiB, CPU {restart['cpu']:.1f} s (start included)")
    print(f"  ground CPU-s while creating: {ground_line(f.ground_create)}")
    print(f"  ground CPU-s in floor (a):   {ground_line(f.ground_floor_a)}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--resync", type=float, default=300.0, help="operator resync period, s")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--idle-with-resync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="place the idle window around the next resync tick (waits for it)",
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="the operator's workers, and the floors' clients"
    )
    args = parser.parse_args()
    for n in args.n:
        report(Bench(n, args).run(), args)


if __name__ == "__main__":
    main()
