"""The fault catalogue (README, Reliability): each fault injected on the test ground while
an agent serves, most of them in the middle of a rollout or a download. For each, asserted:
what served before keeps serving while the fault lasts (status and routes point at a good
revision, the engines keep a ready pod), the state converges once the fault ends, no child
appears twice, and no Secret value reaches the operator's log, Events, status or the
fetcher's output.

The agent: STT and TTS internal (whisper, joe), the LLM at an external vendor whose key is
a recognizable Secret value; joe is downloaded with an Authorization header from another
Secret. The operator runs as a process (it can be SIGKILLed), as the chart's
ServiceAccount; download Jobs are run by FetchJobRunner as a kubelet would run them.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3
from fetch.fileserver import FileServer
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from testground import Cluster, harness
from testground.faultproxy import FaultProxy
from testground.harness import (
    EXTERNAL_LLM,
    MODEL_FILES,
    AgentView,
    FetchJobRunner,
    condition,
    digest,
    model_paths,
    operator_process,
    wait_for,
)
from testground.processes import Process
from testground.storage import TmpfsUnavailableError, resize_tmpfs, size_limited_tmpfs

from voice_operator.kube import Kube, KubeError

pytestmark = pytest.mark.cluster

# Recognizable Secret values: none of them may show up anywhere but in the Secrets.
VENDOR_KEY = "gsk-FAULTCANARY-3f9c1e7a"
DOWNLOAD_TOKEN = "Bearer DLCANARY-8d2b6c4f"
CANARIES = tuple(
    v for s in (VENDOR_KEY, DOWNLOAD_TOKEN) for v in (s, base64.b64encode(s.encode()).decode())
)
# The Job leaves the fetcher's retry settings at their defaults (30 s stall timeout): short
# ones here, as in the fetch tier.
FAST_FETCH = {"FETCH_STALL_TIMEOUT": "1", "FETCH_BACKOFF_MAX": "0.2", "FETCH_MAX_ATTEMPTS": "6"}
STAGE_ASSET = {"stt": "whisper", "tts": "joe"}
CHILD_KINDS = (
    "Deployment",
    "Service",
    "ConfigMap",
    "PersistentVolumeClaim",
    "ServiceAccount",
    "Role",
    "RoleBinding",
)
MANAGED = {"app.kubernetes.io/managed-by": "voice-operator"}


@pytest.fixture(scope="module")
def digests() -> dict[str, str]:
    return {name: digest(path) for name, path in model_paths().items()}


def agent_manifest(namespace: str, **stages: dict) -> dict:
    """The rollout tests' agent with its LLM at the vendor (the key is a canary)."""
    return harness.agent_manifest(namespace, **{"llm": EXTERNAL_LLM, **stages})


def secret(namespace: str, name: str, key: str, value: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode()},
    }


@dataclass
class OperatorProcess:
    """`voice-operator` as a process: stopped, SIGKILLed and started again by the tests;
    one log across its lives."""

    namespace: str
    kubeconfig: Path
    log: Path
    process: Process | None = None
    kills: int = 0

    def start(self) -> OperatorProcess:
        self.process = operator_process(self.namespace, self.kubeconfig, self.log)
        self.process.start()
        return self

    def kill(self) -> None:
        """SIGKILL: no handler finishes, whatever was half-applied stays so."""
        assert self.process and self.process.popen
        self.process.popen.kill()
        self.process.popen.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def alive(self) -> bool:
        return bool(self.process and self.process.alive())

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def errors(self) -> list[str]:
        """Log lines of failed reconciles, tracebacks and errors."""
        return [
            line
            for line in self.text().splitlines()
            if "Traceback" in line
            or '"levelname": "ERROR"' in line
            or "reconcile of" in line
            or '"level": "error"' in line
        ]


@dataclass
class Ground(AgentView):
    cluster: Cluster
    kube: Kube
    namespace: str
    volume: Path
    server: FileServer
    runner: FetchJobRunner
    operator: OperatorProcess
    digests: dict[str, str]
    baseline: list[tuple[str, str]] = field(default_factory=list)

    def children(self) -> list[tuple[str, str]]:
        """Every object carrying the operator's labels, but Jobs (made and removed per
        download) and what the controllers derive (ReplicaSets, Pods)."""
        return sorted(
            (kind, obj["metadata"]["name"])
            for kind in CHILD_KINDS
            for obj in self.kube.list(kind, self.namespace, labels=MANAGED)
        )

    # --- acting
    def asset(self, name: str, version: str, **behaviour: Any) -> dict:
        """A ModelAsset version whose files the server serves under names of their own
        (so each version's requests and bytes are counted apart), misbehaving as told."""
        engine, fmt, files = MODEL_FILES[name]
        paths = model_paths()
        entries = []
        for path, served in files.items():
            behaviours = behaviour if path == next(iter(files)) else {}
            if name == "joe":
                behaviours = {**behaviours, "require": ("Authorization", DOWNLOAD_TOKEN)}
            url = self.server.add(f"{version}-{served}", paths[served], **behaviours)
            entries.append({"url": url, "sha256": self.digests[served], "path": path})
        spec: dict[str, Any] = {
            "engine": engine,
            "format": fmt,
            "version": version,
            "files": entries,
            "storage": {"size": "2Gi"},
        }
        if name == "joe":
            spec["auth"] = {"secretRef": {"name": "model-host", "key": "token"}}
        return {
            "apiVersion": "voiceops.dev/v1alpha1",
            "kind": "ModelAsset",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }

    def served_bytes(self, version: str, name: str) -> int:
        first = next(iter(MODEL_FILES[name][2].values()))
        return self.server.served(f"{version}-{first}").bytes_sent

    def wait_asset(self, name: str, version: str, timeout: float = 90) -> dict:
        def ready() -> dict | None:
            obj = self.kube.get("ModelAsset", name, self.namespace) or {}
            ok = (obj.get("status") or {}).get("currentVersion") == version and condition(
                obj, "Ready"
            ).get("status") == "True"
            return obj if ok else None

        return wait_for(f"{name} {version} Ready", ready, timeout)

    def wait(self, what: str, check: Callable[[dict], bool], timeout: float = 90) -> dict:
        def current() -> dict | None:
            try:
                obj = self.agent()
            except (KubeError, OSError, Exception):
                return None
            status = obj.get("status") or {}
            fresh = status.get("observedGeneration") == obj["metadata"]["generation"]
            return obj if fresh and check(obj) else None

        return wait_for(what, current, timeout)

    def wait_reason(self, type_: str, reason: str) -> dict:
        return self.wait(f"{type_} {reason}", lambda o: condition(o, type_).get("reason") == reason)

    def wait_serving(self, timeout: float = 90, **versions: str) -> dict:
        """Until the agent is Ready, Progressing=False, and each stage serves its version
        from a template of its lastGoodRevision."""

        def done(o: dict) -> bool:
            comps = o["status"]["components"]
            return (
                condition(o, "Ready").get("status") == "True"
                and condition(o, "Progressing").get("status") == "False"
                and all(comps[c].get("modelVersion") == v for c, v in versions.items())
                and all(
                    comps[c].get("revision") == comps[c].get("lastGoodRevision")
                    for c in STAGE_ASSET
                )
            )

        obj = self.wait(f"serving {versions}, Ready and stable", done, timeout)
        for component in STAGE_ASSET:
            assert (
                self.template_revision(component)
                == obj["status"]["components"][component]["revision"]
            )
        return obj

    # --- judging
    def assert_no_duplicates(self) -> None:
        """The same children as when the agent first became Ready, at most one fetch Job
        per asset version, and per Deployment exactly its replicas in ReplicaSets and pods."""
        assert self.children() == self.baseline
        jobs = Counter(
            (j["metadata"]["labels"].get("voiceops.dev/asset"), j["metadata"]["name"])
            for j in self.kube.list(
                "Job", self.namespace, labels={"app.kubernetes.io/component": "fetch"}
            )
        )
        assert all(n == 1 for n in jobs.values()), jobs
        for deployment in self.kube.list("Deployment", self.namespace, labels=MANAGED):
            name = deployment["metadata"]["name"]
            component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]

            def settled(name: str = name, component: str = component) -> tuple | None:
                current = self.kube.get("Deployment", name, self.namespace) or {}
                want = current["spec"]["replicas"]
                sets = json.loads(
                    self.cluster.kubectl(
                        "get",
                        "replicasets",
                        "-n",
                        self.namespace,
                        "-l",
                        f"app.kubernetes.io/component={component}",
                        "-o",
                        "json",
                    ).stdout
                )["items"]
                pods = [
                    p
                    for p in self.kube.list(
                        "Pod", self.namespace, labels={"app.kubernetes.io/component": component}
                    )
                    if not p["metadata"].get("deletionTimestamp")
                ]
                counts = (want, sum(rs["spec"]["replicas"] for rs in sets), len(pods))
                return counts if counts == (want, want, want) else None

            wait_for(f"{name}: its replicas in ReplicaSets and pods, no more", settled, 30)

    def assert_no_secret_leaked(self) -> None:
        everything = {
            "the operator's log": self.operator.text(),
            "the fetchers' output": self.runner.output(),
            "Events": json.dumps(self.events()),
            "agents and assets": json.dumps(
                self.kube.list("VoiceAgent", self.namespace)
                + self.kube.list("ModelAsset", self.namespace)
            ),
            "ConfigMaps and Jobs": json.dumps(
                self.kube.list("ConfigMap", self.namespace) + self.kube.list("Job", self.namespace)
            ),
        }
        for where, text in everything.items():
            for canary in CANARIES:
                assert canary not in text, f"a Secret value reached {where}"

    def assert_events_not_repeated(self) -> None:
        """A transition is recorded once: no two RolloutSucceeded/RolledBack/RouteSwitched
        Events say the same. (An Event goes after the status write, so a kill between them
        may lose one; a retried reconcile must not record it twice.)"""
        said = Counter(
            (e["reason"], e["message"])
            for e in self.events()
            if e["reason"] in ("RolloutSucceeded", "RolledBack", "RouteSwitched")
        )
        assert all(n == 1 for n in said.values()), [k for k, n in said.items() if n > 1]

    def assert_quiet(self, seconds: float = 6) -> None:
        """Converged means quiet: no reconcile keeps failing."""
        before = len(self.operator.errors())
        time.sleep(seconds)
        new = self.operator.errors()[before:]
        assert not new, "\n".join(new[-5:])

    def assert_converged(self, **versions: str) -> dict:
        obj = self.wait_serving(**versions)
        assert condition(obj, "Degraded").get("status") == "False", condition(obj, "Degraded")
        self.assert_no_duplicates()
        self.assert_quiet()
        self.assert_no_secret_leaked()
        return obj


class UnreachableError(Exception):
    """What the apiserver does not serve right now."""


@dataclass
class Watchdog:
    """Samples, while a fault lasts, that what served keeps serving: each internal stage's
    status revision is one of `allowed` (the last good) or, with `follow`, the one its
    Deployment's template has (the new one, once healthy),
    its Deployment keeps a ready pod, and the routes send every stage where it went."""

    ground: Ground
    allowed: dict[str, set[str]]
    # Also allowed: the revision the Deployment's template now has (the template moves
    # first, and the status follows once that revision is healthy).
    follow: bool = True
    samples: int = 0
    unreachable: int = 0
    violations: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def __enter__(self) -> Watchdog:
        self.thread = threading.Thread(target=self._loop, daemon=True, name="watchdog")
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread
        self.thread.join(40)

    def _loop(self) -> None:
        while not self.stop.wait(0.25):
            try:
                self._sample()
            except (urllib3.exceptions.HTTPError, OSError, UnreachableError):
                self.unreachable += 1  # the apiserver is down or etcd stopped: nothing to read
            except KubeError as e:
                if e.status < 500 and e.status != 429:
                    self.violations.append(f"reading failed: {e}")
                self.unreachable += 1
            except Exception as e:  # what was read is not what serving looks like
                self.violations.append(f"{type(e).__name__}: {e}")

    def _get(self, kind: str, name: str) -> dict:
        obj = self.ground.kube.get(kind, name, self.ground.namespace)
        if obj is None:
            # Right after an apiserver restart our CRDs are briefly not served (404).
            raise UnreachableError(f"{kind}/{name}")
        return obj

    def _sample(self) -> None:
        status = self._get("VoiceAgent", "support")["status"]
        routes = json.loads(self._get("ConfigMap", "support-routes")["data"]["routes.json"])[
            "stages"
        ]
        self.samples += 1
        for component, revisions in self.allowed.items():
            revision = status["components"][component]["revision"]
            d = self._get("Deployment", f"support-{component}")
            template = d["spec"]["template"]["metadata"]["annotations"]["voiceops.dev/revision"]
            if revision not in revisions and not (self.follow and revision == template):
                self.violations.append(f"{component} status at {revision}, not {revisions}")
            if not (d.get("status") or {}).get("readyReplicas"):
                self.violations.append(f"{component}: no ready pod")
            if (routes.get(component) or {}).get("provider") != "internal":
                self.violations.append(f"{component} route: {routes.get(component)}")
        if (routes.get("llm") or {}).get("provider") != "external":
            self.violations.append(f"llm route: {routes.get('llm')}")

    def assert_kept_serving(self, min_samples: int = 3) -> None:
        assert self.samples >= min_samples, (self.samples, self.unreachable)
        assert not self.violations, self.violations[:10]


@pytest.fixture
def ground(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    operator_settings: None,  # noqa: ARG001 (its environment is what the operator reads)
    operator_kubeconfig: Path,
    digests: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Ground]:
    """Two Ready assets and a Ready agent, the operator as a process (through the fault
    proxy when the test asks for `proxy`)."""
    resync = getattr(request.function, "resync_seconds", None)
    if resync:
        monkeypatch.setenv("VOICE_OPERATOR_RESYNC_SECONDS", str(resync))
    kubeconfig = operator_kubeconfig
    if "proxy" in request.fixturenames:
        proxy: FaultProxy = request.getfixturevalue("proxy")
        kubeconfig = proxy.kubeconfig_for(operator_kubeconfig, tmp_path / "proxied.kubeconfig")
    volume = tmp_path / "volume"
    volume.mkdir()
    small = (
        request.getfixturevalue("small_volume") if "small_volume" in request.fixturenames else None
    )
    op = OperatorProcess(namespace, kubeconfig, tmp_path / "operator.log")
    with (
        FileServer() as server,
        FetchJobRunner(cluster, kube, namespace, volume, FAST_FETCH) as runner,
    ):
        if small is not None:
            runner.volumes["joe"] = small
        g = Ground(cluster, kube, namespace, volume, server, runner, op, digests)
        cluster.apply(
            secret(namespace, "groq", "api-key", VENDOR_KEY),
            secret(namespace, "model-host", "token", DOWNLOAD_TOKEN),
        )
        op.start()
        try:
            cluster.apply(g.asset("whisper", "v1"), g.asset("joe", "v1"))
            g.wait_asset("whisper", "v1")
            g.wait_asset("joe", "v1")
            deadline = getattr(request.function, "progress_deadline", None)
            rollout = (
                {"rollout": {"progressDeadlineSeconds": deadline, "autoRollback": True}}
                if deadline
                else {}
            )
            cluster.apply(agent_manifest(namespace, **rollout))
            g.wait_serving(stt="v1", tts="v1")
            g.baseline = g.children()
            yield g
        finally:
            op.stop()
            assert not runner.errors, runner.errors


@pytest.fixture
def proxy(cluster: Cluster) -> Iterator[FaultProxy]:
    p = FaultProxy(cluster.kubeconfig).start()
    try:
        yield p
    finally:
        p.stop()


def local_plane(ground: Ground):
    if ground.cluster.plane is None:
        pytest.skip("needs the test ground's own control plane (its processes are the fault)")
    return ground.cluster.plane


def start_rollout(ground: Ground, asset: str, version: str) -> str:
    """A new version of `asset`, downloaded; returns the stage's last good revision once
    the Deployment's template has moved on from it (the rollout is under way)."""
    component = {a: c for c, a in STAGE_ASSET.items()}[asset]
    good = ground.stage(component)["revision"]
    ground.cluster.apply(ground.asset(asset, version))
    wait_for(
        f"{component} template moving to {version}",
        lambda: ground.template_revision(component) != good,
        timeout=60,
        poll=0.05,
    )
    return good


# --- the control plane ---------------------------------------------------------------


def progress_deadline(seconds: int):
    """The agent of this test gives its pods this long: a control plane that is away
    longer than the harness's 12 s (a restart on a loaded machine, with RBAC answering 403
    until its caches fill) fails the rollout by Kubernetes' own deadline, a rollback that
    is right but not what the test is about."""

    def mark(test):
        test.progress_deadline = seconds
        return test

    return mark


@progress_deadline(120)
def test_apiserver_restarted_mid_rollout(ground: Ground):
    plane = local_plane(ground)
    good = start_rollout(ground, "whisper", "v2")
    with Watchdog(ground, {"stt": {good}}) as dog:
        downtime = plane.restart_apiserver()
        time.sleep(6)
    dog.assert_kept_serving()
    assert downtime > 0.5 and dog.unreachable > 0  # it really was gone
    assert ground.operator.alive()
    obj = ground.assert_converged(stt="v2", tts="v1")
    stt = obj["status"]["components"]["stt"]
    assert [h["result"] for h in stt["history"]].count("Serving") == 1
    ground.assert_events_not_repeated()


@progress_deadline(120)
def test_etcd_paused_for_10s_mid_rollout(ground: Ground):
    plane = local_plane(ground)
    good = start_rollout(ground, "joe", "v2")
    with Watchdog(ground, {"tts": {good}}) as dog:
        time.sleep(1)
        with plane.paused("etcd"):
            time.sleep(10)
        time.sleep(3)
    dog.assert_kept_serving()
    assert ground.operator.alive()
    ground.assert_converged(stt="v1", tts="v2")
    assert [h["result"] for h in ground.stage("tts")["history"]].count("Serving") == 1


# --- conflicts -------------------------------------------------------------------------


def test_another_field_manager_fighting_over_the_children(ground: Ground):
    """An intruder force-applies its own values into fields the operator owns, and writes
    the agent's status with a stale resourceVersion, while a rollout runs."""
    stale = ground.agent()["metadata"]["resourceVersion"]
    good = start_rollout(ground, "whisper", "v2")
    stop = threading.Event()
    fights: Counter[str] = Counter()

    def fight() -> None:
        while not stop.wait(0.25):
            for component in ("stt", "gateway"):
                try:
                    ground.cluster.kubectl(
                        "apply",
                        "--server-side",
                        "--force-conflicts",
                        "--field-manager=intruder",
                        "-f",
                        "-",
                        input=json.dumps(
                            {
                                "apiVersion": "apps/v1",
                                "kind": "Deployment",
                                "metadata": {
                                    "name": f"support-{component}",
                                    "namespace": ground.namespace,
                                },
                                "spec": {"replicas": 2},
                            }
                        ),
                    )
                    fights["apply"] += 1
                except subprocess.CalledProcessError:
                    fights["apply refused"] += 1
            body = ground.agent()
            body["metadata"]["resourceVersion"] = stale
            body["status"] = {"phase": "intruder"}
            try:
                agents.replace_namespaced_custom_object_status(
                    "voiceops.dev", "v1alpha1", ground.namespace, "voiceagents", "support", body
                )
                fights["stale status accepted"] += 1
            except ApiException as e:
                fights[f"stale status {e.status}"] += 1

    agents = client.CustomObjectsApi(
        config.new_client_from_config(config_file=str(ground.cluster.kubeconfig))
    )
    fighter = threading.Thread(target=fight, daemon=True)
    with Watchdog(ground, {"stt": {good}}) as dog:
        fighter.start()
        time.sleep(15)
        stop.set()
        fighter.join(30)
    dog.assert_kept_serving()
    for component in ("stt", "gateway"):
        wait_for(
            f"support-{component} back at the operator's replicas",
            lambda c=component: (
                ground.kube.get("Deployment", f"support-{c}", ground.namespace)["spec"]["replicas"]
                == 1
            ),
        )
    assert fights["apply"] > 20 and fights["stale status 409"] > 5, fights
    assert fights["stale status accepted"] == 0, fights
    ground.assert_converged(stt="v2", tts="v1")
    for component in ("stt", "gateway"):
        d = ground.kube.get("Deployment", f"support-{component}", ground.namespace)
        assert d and d["spec"]["replicas"] == 1
        owners = {
            m["manager"]
            for m in d["metadata"]["managedFields"]
            if "f:replicas" in json.dumps(m.get("fieldsV1", {}).get("f:spec", {}))
        }
        assert owners == {"voice-operator"}, owners
    assert (
        "phase" not in ground.agent()["status"] or ground.agent()["status"]["phase"] != "intruder"
    )


def test_every_write_answered_409_for_a_while(ground: Ground, proxy: FaultProxy):
    good = start_rollout(ground, "whisper", "v2")
    with Watchdog(ground, {"stt": {good}}) as dog:
        proxy.refuse_writes(15)
        time.sleep(15)
    dog.assert_kept_serving()
    refused = len(proxy.refused)
    assert refused > 0
    # Retried with backoff, not in a hot loop: a handful of reconciles a key in 15 s.
    assert refused < 150, Counter(proxy.refused).most_common(5)
    ground.assert_converged(stt="v2", tts="v1")
    assert [h["result"] for h in ground.stage("stt")["history"]].count("Serving") == 1
    ground.assert_events_not_repeated()


def resync_seconds(seconds: float):
    """The operator of this test resyncs this rarely: what it does comes from its watches."""

    def mark(test):
        test.resync_seconds = seconds
        return test

    return mark


@resync_seconds(600)
def test_watch_streams_cut_again_and_again(ground: Ground, proxy: FaultProxy):
    """Every 1.5 s the proxy drops every connection of the operator, watch streams and
    requests alike, while an asset version and a spec change arrive. With resync at
    600 s, only resumed watches can bring those in."""
    good = ground.stage("stt")["revision"]
    stop = threading.Event()

    def cut() -> None:
        while not stop.wait(1.5):
            proxy.cut()

    cutter = threading.Thread(target=cut, daemon=True)
    with Watchdog(ground, {"stt": {good}}) as dog:
        cutter.start()
        time.sleep(2)
        ground.cluster.apply(ground.asset("whisper", "v2"))
        ground.wait_asset("whisper", "v2")
        time.sleep(8)
        stop.set()
        cutter.join(10)
    ground.cluster.apply(agent_manifest(ground.namespace, gateway={"replicas": 2}))
    dog.assert_kept_serving()
    assert proxy.cuts > 10, proxy.cuts
    obj = ground.assert_converged(stt="v2", tts="v1")
    assert obj["metadata"]["generation"] == obj["status"]["observedGeneration"]
    gateway = ground.kube.get("Deployment", "support-gateway", ground.namespace)
    assert gateway and gateway["spec"]["replicas"] == 2


# --- the operator killed ------------------------------------------------------------------

# One kill delay per seed (random.Random(seed)), two kills per rollout or download.
ROLLOUT_SEEDS = (11, 12, 13, 14, 15, 16, 17, 18, 19, 20)
DOWNLOAD_SEEDS = (21, 22, 23, 24, 25, 26, 27, 28, 29, 30)


def kill_at_seeded_points(ground: Ground, seeds: tuple[int, ...], window: float) -> list[float]:
    """SIGKILL the operator once per seed, `uniform(0, window)` seconds after it (re)started
    or after the step began; start it again after each kill."""
    delays = []
    for seed in seeds:
        delay = random.Random(seed).uniform(0, window)
        delays.append(round(delay, 2))
        time.sleep(delay)
        ground.operator.kill()
        ground.operator.start()
    return delays


def test_operator_sigkilled_at_seeded_points_of_rollouts(ground: Ground):
    steps = [("whisper", "v2"), ("joe", "v2"), ("whisper", "v3"), ("joe", "v3"), ("whisper", "v4")]
    versions = {"stt": "v1", "tts": "v1"}
    pairs = [ROLLOUT_SEEDS[i : i + 2] for i in range(0, len(ROLLOUT_SEEDS), 2)]
    for (asset, version), seeds in zip(steps, pairs, strict=True):
        component = {a: c for c, a in STAGE_ASSET.items()}[asset]
        good = ground.stage(component)["revision"]
        ground.cluster.apply(ground.asset(asset, version))
        ground.wait_asset(asset, version)
        with Watchdog(ground, {component: {good}}) as dog:
            wait_for("a new template", lambda c=component, g=good: ground.template_revision(c) != g)
            kill_at_seeded_points(ground, seeds, window=3.0)
        dog.assert_kept_serving(min_samples=1)
        versions[component] = version
        obj = ground.wait_serving(**versions)
        history = obj["status"]["components"][component]["history"]
        assert [h["result"] for h in history].count("Serving") == 1
        ground.assert_no_duplicates()
    assert ground.operator.kills == len(ROLLOUT_SEEDS)
    ground.assert_converged(stt="v4", tts="v3")
    ground.assert_events_not_repeated()


def test_operator_sigkilled_at_seeded_points_of_downloads(ground: Ground):
    steps = ["v2", "v3", "v4", "v5", "v6"]
    pairs = [DOWNLOAD_SEEDS[i : i + 2] for i in range(0, len(DOWNLOAD_SEEDS), 2)]
    size = model_paths()["joe.onnx"].stat().st_size
    for version, seeds in zip(steps, pairs, strict=True):
        good = ground.stage("tts")["revision"]
        # 40 MB/s: the download takes about as long as the kill window.
        ground.cluster.apply(ground.asset("joe", version, rate=40e6))
        with Watchdog(ground, {"tts": {good}}) as dog:
            kill_at_seeded_points(ground, seeds, window=2.0)
            ground.wait_asset("joe", version)
        dog.assert_kept_serving(min_samples=1)
        ground.wait_serving(tts=version)
        runs = ground.runner.runs_of(version)
        assert runs and all(r.result.returncode == 0 for r in runs), [
            r.result.stderr[-500:] for r in runs
        ]
        # Whatever a kill repeated, the bytes crossed the wire once.
        assert ground.served_bytes(version, "joe") == size
        ground.assert_no_duplicates()
    assert ground.operator.kills == len(DOWNLOAD_SEEDS)
    ground.assert_converged(stt="v1", tts="v6")


# --- the download server and the volume ----------------------------------------------


def test_download_server_5xx_stall_truncation_and_wrong_digest(ground: Ground):
    size = model_paths()["joe.onnx"].stat().st_size
    serving = "v1"
    # Transient faults: the fetcher retries and resumes within its Job.
    for version, behaviour in (
        ("v2", {"fail_times": 3, "fail_status": 503}),
        ("v3", {"stall_after": 4 << 20, "stall_for": 3.0, "stall_times": 1}),
        ("v4", {"cut_after": 8 << 20, "cut_times": 2}),
    ):
        good = ground.stage("tts")["revision"]
        with Watchdog(ground, {"tts": {good}}) as dog:
            ground.cluster.apply(ground.asset("joe", version, **behaviour))
            ground.wait_asset("joe", version)
        dog.assert_kept_serving(min_samples=1)
        ground.wait_serving(tts=version)
        serving = version
        [run] = ground.runner.runs_of(version)
        assert run.result.returncode == 0, run.result.stderr[-800:]
        # Resumed with Range: what arrived before a stall or a cut is not sent again.
        assert size <= ground.served_bytes(version, "joe") < size + (1 << 20)

    # A wrong digest mid-stream (one byte flipped on every request): the version fails,
    # the agent says so and keeps serving what it had, and nothing retries in a loop.
    good = ground.stage("tts")["revision"]
    with Watchdog(ground, {"tts": {good}}, follow=False) as dog:
        ground.cluster.apply(ground.asset("joe", "v5", corrupt=True))
        obj = ground.wait_reason("Degraded", "ModelVersionFailed")
        time.sleep(4)
    dog.assert_kept_serving()
    assert "ChecksumMismatch" in condition(obj, "Degraded")["message"]
    assert condition(obj, "Ready")["status"] == "True"
    assert ground.stage("tts")["modelVersion"] == serving
    asset = ground.kube.get("ModelAsset", "joe", ground.namespace)
    assert asset and condition(asset, "Failed")["reason"] == "ChecksumMismatch"
    assert asset["status"]["currentVersion"] == serving
    assert len(ground.runner.runs_of("v5")) == 1
    assert ground.runner.runs_of("v5")[0].result.returncode == 3
    ground.assert_quiet()

    # The fault ends: a good source for a new version heals the agent.
    ground.cluster.apply(ground.asset("joe", "v6"))
    ground.wait_asset("joe", "v6")
    ground.assert_converged(stt="v1", tts="v6")


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """joe's volume: a real size-limited tmpfs (needs root), room for one version."""
    try:
        with size_limited_tmpfs(tmp_path / "pvc", "100m") as mount_point:
            yield mount_point
    except TmpfsUnavailableError as e:
        pytest.skip(str(e))


def test_volume_full(ground: Ground, small_volume: Path):
    v1 = {p.name: p.read_bytes() for p in (small_volume / "joe" / "v1").iterdir()}
    good = ground.stage("tts")["revision"]
    with Watchdog(ground, {"tts": {good}}, follow=False) as dog:
        ground.cluster.apply(ground.asset("joe", "v2"))
        obj = ground.wait_reason("Degraded", "ModelVersionFailed")
        time.sleep(3)
    dog.assert_kept_serving()
    assert "DiskFull" in condition(obj, "Degraded")["message"]
    assert {p.name: p.read_bytes() for p in (small_volume / "joe" / "v1").iterdir()} == v1
    assert not (small_volume / "joe" / "v2" / "joe.onnx").exists()
    ground.assert_quiet()

    # The fault ends as the README's troubleshooting table says: storage.size raised (and
    # the volume grown under it, as a resizing storage driver would).
    resize_tmpfs(small_volume, "400m")
    bigger = ground.asset("joe", "v2")
    bigger["spec"]["storage"]["size"] = "3Gi"
    ground.cluster.apply(bigger)
    wait_for(
        "the claim raised to 3Gi",
        lambda: (
            ground.kube.get("PersistentVolumeClaim", "joe-models", ground.namespace)["spec"][
                "resources"
            ]["requests"]["storage"]
            == "3Gi"
        ),
    )
    ground.wait_asset("joe", "v2", timeout=30)
    ground.assert_converged(stt="v1", tts="v2")


def test_crash_looping_engine_during_a_rollout(ground: Ground):
    good = ground.stage("tts")["revision"]
    crashing = {
        "provider": "internal",
        "model": "joe",
        "podAnnotations": {"testground.voiceops.dev/crash-loop": "true"},
    }
    with Watchdog(ground, {"tts": {good}}, follow=False) as dog:
        ground.cluster.apply(agent_manifest(ground.namespace, tts=crashing))
        obj = ground.wait_reason("RolledBack", "CrashLoop")
        time.sleep(4)  # rolled back and not retried
    dog.assert_kept_serving()
    assert condition(obj, "Degraded")["status"] == "True"
    assert ground.template_revision("tts") == good
    assert len(ground.events("RolledBack")) == 1
    # The fault ends: the spec without the crashing setting heals the agent.
    ground.cluster.apply(agent_manifest(ground.namespace))
    obj = ground.assert_converged(stt="v1", tts="v1")
    assert condition(obj, "RolledBack")["status"] == "False"
    assert obj["status"]["components"]["tts"]["revision"] == good
