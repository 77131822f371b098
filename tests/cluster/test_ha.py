"""Operator availability, run as the Helm chart runs it: two replicas with kopf peering, the
active one SIGKILLed mid-rollout and the standby taking over (the rollout completes once);
and the namespaced install (`watchNamespaces`: a Role, no ClusterRole) with an operator
actually running under it. The operators are real processes of this checkout's code with
the container's args and env from `helm template`, authenticated as the chart's
ServiceAccount."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from testground import Cluster, kwok_placement
from testground.harness import (
    REPO,
    ServedModel,
    asset_manifest,
    condition,
    make_ready_asset,
    wait_for,
)
from testground.processes import Process, free_port

from voice_operator.kube import Kube

pytestmark = pytest.mark.cluster
log = logging.getLogger(__name__)

CHART = REPO / "charts" / "voice-operator"
PEERING_CRDS = CHART / "crds" / "kopf.dev_peerings.yaml"
# kwok makes these pods Ready only this long after they are created (kwok-stages.yaml):
# a rollout stays in progress long enough to kill the operator in the middle of it.
READY_DELAY = {"testground.voiceops.dev/ready-delay": "8s"}
# Everything the chart gives the operator's identity; the rest (its Deployment, Service,
# dashboard) is what a kubelet would run, replaced here by processes.
IDENTITY_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ClusterKopfPeering",
    "KopfPeering",
}
# Straight to 127.0.0.1, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class ChartOperator:
    """The operator as `helm template` renders it: the objects of its identity (applied),
    and its container's args and env (run by `process()`)."""

    cluster: Cluster
    namespace: str
    objects: list[dict]
    args: list[str]
    env: dict[str, str]
    service_account: str
    kubeconfig: Path | None = None
    processes: list[ChartProcess] = field(default_factory=list)

    def install(self, folder: Path) -> ChartOperator:
        self.cluster.kubectl("apply", "--server-side", "-f", str(PEERING_CRDS))
        self.cluster.kubectl(
            "wait", "--for=condition=Established", "-f", str(PEERING_CRDS), "--timeout=60s"
        )
        self.cluster.kubectl(
            "apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(self.objects)
        )
        self.kubeconfig = self.cluster.token_kubeconfig(
            self.service_account, self.namespace, folder / f"{self.service_account}.kubeconfig"
        )
        return self

    def uninstall(self) -> None:
        for p in self.processes:
            p.stop()
        for obj in self.objects:
            if "namespace" not in obj["metadata"]:  # the namespaced ones go with their namespace
                self.cluster.kubectl(
                    "delete", obj["kind"], obj["metadata"]["name"], "--ignore-not-found"
                )

    def peers(self) -> dict[str, dict]:
        """The replicas' keep-alives in the chart's peering object."""
        [peering] = [o for o in self.objects if o["kind"].endswith("KopfPeering")]
        meta = peering["metadata"]
        where = ["-n", meta["namespace"]] if "namespace" in meta else []
        out = self.cluster.kubectl(
            "get", peering["kind"], meta["name"], *where, "-o", "json"
        ).stdout
        return json.loads(out).get("status") or {}

    def process(self, log_path: Path) -> ChartProcess:
        """One replica: the container's args and env, with free ports on 127.0.0.1 for what
        each pod would have on its own IP."""
        assert self.kubeconfig is not None
        metrics, liveness = free_port(), free_port()
        args = [
            f"--metrics-port={metrics}"
            if a.startswith("--metrics-port=")
            else f"--liveness=http://127.0.0.1:{liveness}/healthz"
            if a.startswith("--liveness=")
            else a
            for a in self.args
        ]
        proc = ChartProcess(
            log_path.stem,
            # `voice-operator` is this module's console script.
            [sys.executable, "-m", "voice_operator.main", *args],
            log_path,
            env={**self.env, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"},
            metrics_port=metrics,
        )
        self.processes.append(proc)
        proc.start()
        return proc


@dataclass
class ChartProcess(Process):
    metrics_port: int = 0

    def reconciles(self) -> float:
        """voice_operator_reconciles_total over all kinds (0 while nothing answers)."""
        try:
            with _OPENER.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "voice_operator_reconciles_total"
        )

    def log_records(self) -> list[dict]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append({"message": line, "severity": "raw"})
        return records

    def logged(self, pattern: str) -> list[dict]:
        return [r for r in self.log_records() if re.search(pattern, str(r.get("message")))]


def render_operator(cluster: Cluster, release: str, namespace: str, **values) -> ChartOperator:
    """`helm template` of the chart with these values (as JSON), engines placed on kwok."""
    placement = kwok_placement()
    values = {
        "engines": {
            "nodeSelector": placement["nodeSelector"],
            "tolerations": placement["tolerations"],
        },
        **values,
    }
    sets = [a for k, v in values.items() for a in ("--set-json", f"{k}={json.dumps(v)}")]
    out = cluster.helm("template", release, str(CHART), "--namespace", namespace, *sets).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["voice-operator"]
    return ChartOperator(
        cluster,
        namespace,
        [d for d in docs if d["kind"] in IDENTITY_KINDS],
        container["args"],
        {e["name"]: e["value"] for e in container["env"]},
        pod["serviceAccountName"],
    )


@pytest.fixture
def chart_operators() -> Iterator[list[ChartOperator]]:
    """Whatever a test installs from the chart is uninstalled after it."""
    installed: list[ChartOperator] = []
    yield installed
    for op in installed:
        op.uninstall()


def agent_manifest(namespace: str, **stt: object) -> dict:
    return {
        "apiVersion": "voiceops.dev/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": "support", "namespace": namespace},
        "spec": {
            "stt": {"provider": "internal", "model": "whisper", **stt},
            "llm": {"provider": "internal", "model": "smollm"},
            "tts": {"provider": "internal", "model": "joe"},
            "rollout": {"progressDeadlineSeconds": 300},
        },
    }


def events(cluster: Cluster, namespace: str, reason: str) -> list[dict]:
    out = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    return [e for e in json.loads(out)["items"] if e["reason"] == reason]


def children(kube: Kube, namespace: str) -> dict[str, list[str]]:
    labels = {"voiceops.dev/agent": "support"}
    return {
        kind: sorted(o["metadata"]["name"] for o in kube.list(kind, namespace, labels=labels))
        for kind in ("Deployment", "Service", "ConfigMap")
    }


def test_standby_replica_takes_over_a_rollout_when_the_active_one_is_killed(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    model_server: dict[str, ServedModel],
    chart_operators: list[ChartOperator],
    tmp_path: Path,
):
    op = render_operator(cluster, "voice-operator-ha", namespace, replicaCount=2)
    assert any(a.startswith("--peering=") for a in op.args)
    assert [o["kind"] for o in op.objects].count("ClusterKopfPeering") == 1
    chart_operators.append(op.install(tmp_path))

    first = op.process(tmp_path / "replica-a.log")
    wait_for("replica a in the peering", lambda: len(op.peers()) == 1, 30)
    # The second replica starts later, as after a rolling update or a reschedule.
    second = op.process(tmp_path / "replica-b.log")
    wait_for("replica b in the peering", lambda: len(op.peers()) == 2, 30)

    for name in ("whisper", "smollm", "joe"):
        make_ready_asset(cluster, kube, namespace, name, model_server, tmp_path)
    cluster.apply(agent_manifest(namespace, podAnnotations=READY_DELAY))

    def agent() -> dict:
        obj = kube.get("VoiceAgent", "support", namespace)
        assert obj is not None
        return obj

    wait_for("the agent Ready", lambda: condition(agent(), "Ready").get("status") == "True", 90)
    assert first.reconciles() > 0
    assert second.reconciles() == 0, second.log_tail()
    # Each replica has its own priority (kopf pauses all of equal priority), the oldest first.
    priorities = sorted((p["priority"] for p in op.peers().values()), reverse=True)
    assert len(set(priorities)) == 2, op.peers()
    assert not first.logged("Pausing"), first.log_tail()
    before = children(kube, namespace)
    good = agent()["status"]["components"]["stt"]["revision"]

    # A model bump: the new pods take READY_DELAY to become Ready; kill the active replica
    # once the rollout has started (its RolloutStarted Event written).
    make_ready_asset(cluster, kube, namespace, "whisper", model_server, tmp_path, version="v2")

    def rolling_out() -> str | None:
        rev = agent()["status"]["components"]["stt"].get("desiredRevision")
        started = [
            e for e in events(cluster, namespace, "RolloutStarted") if f"{rev})" in e["message"]
        ]
        return rev if rev and rev != good and started else None

    new = wait_for("the stt rollout started", rolling_out, 30, poll=0.05)
    assert condition(agent(), "Progressing").get("reason") == "RollingOut"
    assert first.popen is not None
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(10)
    killed = time.monotonic()
    killed_rv = agent()["metadata"]["resourceVersion"]
    # kopf's standby waits until the dead peer's last keep-alive is `lifetime` (60 s) old.
    lastseen = max(op.peers().values(), key=lambda p: p["priority"])["lastseen"]
    since_keepalive = (datetime.now(UTC) - datetime.fromisoformat(lastseen)).total_seconds()

    # The standby's first reconcile, and its first write to the agent (nobody else writes).
    reconciled = wait_for("the standby's first reconcile", second.reconciles, 120, poll=0.05)
    first_reconcile = time.monotonic() - killed
    wait_for(
        "the standby's first status write",
        lambda: agent()["metadata"]["resourceVersion"] != killed_rv,
        60,
        poll=0.05,
    )
    first_write = time.monotonic() - killed
    log.warning(
        "takeover after SIGKILL: first reconcile %.1f s, first status write %.1f s "
        "(%d reconciles; the killed replica's last keep-alive was %.1f s before the kill)",
        first_reconcile,
        first_write,
        reconciled,
        since_keepalive,
    )
    assert second.logged("Resuming operations"), second.log_tail()

    def served() -> dict | None:
        obj = agent()
        stt = obj["status"]["components"]["stt"]
        ready = condition(obj, "Ready").get("status") == "True"
        return obj if ready and stt["revision"] == new and stt["modelVersion"] == "v2" else None

    obj = wait_for("stt serving v2", served, 90)
    stt = obj["status"]["components"]["stt"]
    assert stt["lastGoodRevision"] == new
    assert [h["revision"] for h in stt["history"]].count(new) == 1, stt["history"]
    assert [h["result"] for h in stt["history"]].count("Serving") == 1, stt["history"]
    time.sleep(3)  # anything a second writer would add, it adds now
    for reason in ("RolloutStarted", "RolloutSucceeded"):
        mine = [e for e in events(cluster, namespace, reason) if new in e["message"]]
        assert len(mine) == 1 and mine[0]["count"] == 1, (reason, mine)
    assert children(kube, namespace) == before
    stt_replicas = cluster.kubectl(
        *("get", "replicasets", "-n", namespace, "-l", "app.kubernetes.io/component=stt"),
        "-o=jsonpath={.items[*].spec.replicas}",
    ).stdout.split()
    assert sum(map(int, stt_replicas)) == 1  # no orphaned pods

    # A replacement replica stands by; the working one stopped gracefully (SIGTERM, as in a
    # rolling update or a drain) hands over at once: it takes itself out of the peering.
    known = set(op.peers())
    third = op.process(tmp_path / "replica-c.log")
    wait_for("replica c in the peering", lambda: set(op.peers()) - known, 30)
    time.sleep(2)
    assert third.reconciles() == 0, third.log_tail()
    assert second.popen is not None
    second.popen.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    wait_for("replica c's first reconcile", third.reconciles, 60, poll=0.05)
    handover = time.monotonic() - stopped
    assert second.popen.wait(30) == 0, second.log_tail()
    log.warning("takeover after SIGTERM: first reconcile %.1f s", handover)
    if cluster.audit_log:
        seen, refused = audited(cluster, f"system:serviceaccount:{namespace}:{op.service_account}")
        assert seen > 0 and refused == [], refused


@pytest.fixture
def other_namespaces(cluster: Cluster, namespace: str) -> Iterator[list[str]]:
    """Two more namespaces beside the test's: the operator's own and one it must not touch."""
    names = [f"{namespace[:50]}-{suffix}" for suffix in ("op", "other")]
    for name in names:
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": {
                        "testground": "true",
                        "pod-security.kubernetes.io/enforce": "restricted",
                    },
                },
            }
        )
        cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name)
    yield names
    for name in names:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def audited(cluster: Cluster, user: str) -> tuple[int, list[str]]:
    """How many requests of `user` the apiserver's audit log has, and those RBAC refused."""
    assert cluster.audit_log is not None
    seen, refused = 0, []
    for line in cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        if event["user"]["username"] != user:
            continue
        seen += 1
        if event.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid":
            ref = event.get("objectRef", {})
            refused.append(f"{event['verb']} {ref.get('resource')} in {ref.get('namespace', '-')}")
    return seen, refused


@pytest.mark.parametrize("replicas", [1, 2])
def test_namespaced_install_reconciles_its_namespace_only_with_a_role(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    other_namespaces: list[str],
    model_server: dict[str, ServedModel],
    chart_operators: list[ChartOperator],
    tmp_path: Path,
    replicas: int,
):
    """watchNamespaces=[ns1]: a Role and RoleBinding in ns1 (a KopfPeering there with two
    replicas), nothing cluster-wide; an agent in ns1 becomes Ready, one elsewhere is left
    alone, and no request of the operator is refused."""
    home, elsewhere = other_namespaces
    op = render_operator(
        cluster, "voice-operator-ns", home, watchNamespaces=[namespace], replicaCount=replicas
    )
    kinds = {(o["kind"], o["metadata"].get("namespace")) for o in op.objects}
    assert kinds == {
        ("ServiceAccount", home),
        ("Role", namespace),
        ("RoleBinding", namespace),
        *([("KopfPeering", namespace)] if replicas > 1 else []),
    }
    assert f"--namespace={namespace}" in op.args
    chart_operators.append(op.install(tmp_path))
    procs = [op.process(tmp_path / f"replica-{i}.log") for i in range(replicas)]
    if replicas > 1:
        wait_for("both replicas in the peering", lambda: len(op.peers()) == replicas, 30)

    for ns in (namespace, elsewhere):
        cluster.apply(
            *(asset_manifest(ns, name, model_server) for name in ("whisper", "smollm", "joe"))
        )
        cluster.apply(agent_manifest(ns))
    for name in ("whisper", "smollm", "joe"):
        make_ready_asset(cluster, kube, namespace, name, model_server, tmp_path)

    def ready() -> bool:
        obj = kube.get("VoiceAgent", "support", namespace)
        return condition(obj, "Ready").get("status") == "True"

    wait_for("the agent in the watched namespace Ready", ready, 90)
    time.sleep(3)  # what the operator would do elsewhere, it would have begun by now
    for kind in ("VoiceAgent", "ModelAsset"):
        for obj in kube.list(kind, elsewhere):
            assert not obj.get("status"), obj
    for kind in ("Deployment", "Service", "ConfigMap", "Job"):
        mine = [o for o in kube.list(kind, elsewhere) if o["metadata"].get("labels")]
        assert mine == [], [o["metadata"]["name"] for o in mine]
    if replicas > 1:
        assert sorted(p.reconciles() == 0 for p in procs) == [False, True]  # one works

    user = f"system:serviceaccount:{home}:{op.service_account}"
    if cluster.audit_log:
        seen, refused = audited(cluster, user)
        assert seen > 0 and refused == [], refused
    for proc in procs:
        assert proc.alive(), proc.log_tail()
        denied = proc.logged(r"403|[Ff]orbidden|[Pp]ermission")
        assert denied == [], denied
        problems = [r for r in proc.log_records() if r.get("severity") in ("error", "raw")]
        assert problems == [], problems


def test_a_replica_paused_by_kopf_freeze_does_no_work(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    other_namespaces: list[str],
    chart_operators: list[ChartOperator],
    tmp_path: Path,
):
    home = other_namespaces[0]
    op = render_operator(
        cluster,
        "voice-operator-ns",
        home,
        watchNamespaces=[namespace],
        replicaCount=2,
        operator={"resyncSeconds": 5},
    )
    chart_operators.append(op.install(tmp_path))
    replica = op.process(tmp_path / "replica.log")
    cluster.apply(agent_manifest(namespace))  # its assets are missing: ModelNotReady

    def observed() -> int | None:
        obj = kube.get("VoiceAgent", "support", namespace) or {}
        return (obj.get("status") or {}).get("observedGeneration")

    wait_for("the agent reconciled", observed, 60)
    [peering] = [o for o in op.objects if o["kind"] == "KopfPeering"]
    # What kopf offers to pause deployed operators (e.g. while one debugs in their place).
    freeze = [sys.executable, "-m", "kopf", "freeze", "-n", namespace, "--lifetime=120"]
    subprocess.run(
        [*freeze, f"--peering={peering['metadata']['name']}", "--message=test"],
        check=True,
        capture_output=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )
    wait_for("the replica paused", lambda: replica.logged("Pausing operations in favour of"), 30)
    time.sleep(1)
    count, generation = replica.reconciles(), observed()
    edited = agent_manifest(namespace)
    edited["spec"]["gateway"] = {"replicas": 2}
    cluster.apply(edited)
    time.sleep(12)  # two resync periods
    assert observed() == generation
    assert replica.reconciles() == count
