"""Rollouts and automatic rollbacks on the real control plane (kwok makes pods Ready, or
not): model version bumps, provider switches both ways, failures, manual rollback, and
the operator stopped and restarted in the middle of each."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client, watch
from prometheus_client import REGISTRY
from testground import Cluster
from testground.harness import (
    EXTERNAL_LLM,
    AgentView,
    Operator,
    ServedModel,
    agent_manifest,
    asset_manifest,
    condition,
    download_job,
    make_ready_asset,
    operator_process,
    run_fetch_job,
    wait_for,
)

from voice_operator.kube import Kube

pytestmark = pytest.mark.cluster


@dataclass
class Setup(AgentView):
    cluster: Cluster
    kube: Kube
    namespace: str
    operator: Operator
    models: dict[str, ServedModel]
    volume: Path

    def wait(self, what: str, check, timeout: float = 90) -> dict:
        def current():
            obj = self.agent()
            fresh = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
            return obj if fresh and check(obj) else None

        return wait_for(what, current, timeout)

    def wait_ready_with(self, component: str, **expected: str) -> dict:
        """Until the agent is Ready and `component`'s status has the expected fields."""
        return self.wait(
            f"{component} {expected} and Ready",
            lambda o: (
                all(o["status"]["components"][component].get(k) == v for k, v in expected.items())
                and condition(o, "Ready")["status"] == "True"
            ),
        )

    def engine_replicas(self, component: str) -> int:
        deployment = self.kube.get("Deployment", f"support-{component}", self.namespace)
        assert deployment is not None
        return deployment["spec"]["replicas"]

    def wait_condition(
        self, type_: str, status: str, reason: str | None = None, timeout: float = 90
    ) -> dict:
        return self.wait(
            f"{type_}={status} {reason or ''}",
            lambda o: (
                condition(o, type_).get("status") == status
                and (reason is None or condition(o, type_).get("reason") == reason)
            ),
            timeout,
        )

    def bump(self, asset: str, version: str) -> None:
        make_ready_asset(
            self.cluster,
            self.kube,
            self.namespace,
            asset,
            self.models,
            self.volume,
            version=version,
        )


@pytest.fixture
def serving(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    operator: Operator,
    model_server: dict[str, ServedModel],
    tmp_path: Path,
    request,
) -> Setup:
    """Three Ready assets and a Ready agent (autoRollback as the test's marker says)."""
    setup = Setup(cluster, kube, namespace, operator, model_server, tmp_path)
    for name in ("whisper", "smollm", "joe"):
        make_ready_asset(cluster, kube, namespace, name, model_server, tmp_path)
    auto = not request.node.get_closest_marker("no_auto_rollback")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "groq", "namespace": namespace},
            "data": {"api-key": base64.b64encode(b"gsk-test").decode()},
        }
    )
    cluster.apply(agent_manifest(namespace, auto_rollback=auto))
    setup.wait_condition("Ready", "True")
    return setup


@dataclass
class Recorder:
    """Every change of the routes ConfigMap and one engine Deployment, in the order etcd
    committed them (resourceVersions of one cluster are etcd revisions: comparable)."""

    namespace: str
    deployment: str
    changes: list[tuple[int, str, dict]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _watch(self, lister, kind: str, name: str) -> None:
        since = None  # resume where the last watch ended, so no change is missed
        while not self.stop.is_set():
            stream = watch.Watch().stream(
                lister,
                namespace=self.namespace,
                field_selector=f"metadata.name={name}",
                resource_version=since,
                timeout_seconds=2,
            )
            for event in stream:
                obj = event["object"]
                since = obj.metadata.resource_version
                rv = int(since)
                if kind == "routes":
                    llm = json.loads(obj.data["routes.json"])["stages"]["llm"]
                    self.changes.append((rv, kind, {"provider": llm and llm["provider"]}))
                else:
                    self.changes.append(
                        (
                            rv,
                            kind,
                            {
                                "event": event["type"],
                                "replicas": obj.spec.replicas,
                                "available": obj.status.available_replicas or 0,
                                "generation": obj.metadata.generation,
                                "observed": obj.status.observed_generation,
                            },
                        )
                    )

    def first(self, kind: str, after: int = 0, **match) -> int:
        """The first change of `kind` after revision `after` whose fields match."""
        for rv, k, data in sorted(self.changes, key=lambda c: c[:2]):
            if (
                rv > after
                and k == kind
                and all(data.get(key) == value for key, value in match.items())
            ):
                return rv
        raise AssertionError(f"no {kind} change with {match}: {sorted(self.changes)}")

    def flips(self) -> list[str]:
        """The llm route's provider each time it changed."""
        seen: list[str] = []
        for _, kind, data in sorted(set((c[0], c[1], json.dumps(c[2])) for c in self.changes)):
            provider = json.loads(data).get("provider")
            if kind == "routes" and (not seen or seen[-1] != provider):
                seen.append(provider)
        return seen


@pytest.fixture
def recorder(serving: Setup) -> Iterator[Recorder]:
    core = client.CoreV1Api(_api(serving))
    apps = client.AppsV1Api(core.api_client)
    rec = Recorder(serving.namespace, "support-llm")
    threads = [
        threading.Thread(
            target=rec._watch,
            args=(core.list_namespaced_config_map, "routes", "support-routes"),
            daemon=True,
        ),
        threading.Thread(
            target=rec._watch,
            args=(apps.list_namespaced_deployment, "deployment", "support-llm"),
            daemon=True,
        ),
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    yield rec
    rec.stop.set()
    for t in threads:
        t.join(5)


def _api(setup: Setup) -> client.ApiClient:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(setup.cluster.kubeconfig))


def _count(name: str, **labels: str) -> float:
    """An operator metric as its /metrics would show it (the operator runs in-process)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_version_bump_rolls_out_and_keeps_the_old_version(serving: Setup):
    before = serving.stage("stt")
    downloads = _count("voice_operator_downloads_total", outcome="ready")
    rollouts = _count("voice_operator_rollouts_total", component="stt", outcome="succeeded")
    serving.bump("whisper", "v2")
    obj = serving.wait(
        "stt serving v2", lambda o: o["status"]["components"]["stt"]["modelVersion"] == "v2"
    )
    stt = obj["status"]["components"]["stt"]
    assert stt["revision"] == stt["lastGoodRevision"] != before["revision"]
    assert serving.template_revision("stt") == stt["revision"]
    assert condition(obj, "Ready")["status"] == "True"
    serving.wait_condition("Progressing", "False", "Stable")
    assert condition(serving.agent(), "Degraded")["status"] == "False"
    asset = serving.kube.get("ModelAsset", "whisper", serving.namespace)
    assert [v["version"] for v in asset["status"]["versions"]] == ["v2", "v1"]
    assert [h["result"] for h in stt["history"][:2]] == ["Serving", "Superseded"]
    assert serving.events("RolloutSucceeded")
    assert _count("voice_operator_downloads_total", outcome="ready") > downloads
    assert _count("voice_operator_rollouts_total", component="stt", outcome="succeeded") > rollouts


def test_failed_version_bump_rolls_back_and_is_not_retried(serving: Setup):
    spec_before = serving.agent()["spec"]
    good = serving.stage("stt")
    routes_before = serving.kube.get("ConfigMap", "support-routes", serving.namespace)
    rollbacks = _count("voice_operator_rollbacks_total", component="stt")

    serving.bump("whisper", "never-ready")  # a version whose pods never become ready
    obj = serving.wait_condition("RolledBack", "True", "ProgressDeadlineExceeded", timeout=120)
    assert condition(obj, "Degraded")["status"] == "True"
    assert condition(obj, "Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert good["revision"] in condition(obj, "RolledBack")["message"]
    stt = obj["status"]["components"]["stt"]
    assert stt["revision"] == good["revision"]
    assert stt["modelVersion"] == "v1"
    assert stt["failed"]["rolledBack"] is True
    assert serving.template_revision("stt") == good["revision"]
    routes_after = serving.kube.get("ConfigMap", "support-routes", serving.namespace)
    assert (
        routes_after["metadata"]["resourceVersion"] == routes_before["metadata"]["resourceVersion"]
    )
    [warning] = serving.events("RolledBack")
    assert warning["type"] == "Warning"
    assert "ProgressDeadlineExceeded" in warning["message"]
    assert _count("voice_operator_rollbacks_total", component="stt") == rollbacks + 1

    # The user's spec is untouched, and we never wrote anything but status.
    after = serving.agent()
    assert after["spec"] == spec_before
    managers = {
        (m["manager"], m.get("subresource", "")) for m in after["metadata"]["managedFields"]
    }
    assert ("voice-operator", "") not in managers

    # Not retried: the rolled-back template stays through more reconciles.
    generation = serving.kube.get("Deployment", "support-stt", serving.namespace)["metadata"][
        "generation"
    ]
    time.sleep(5)
    assert (
        serving.kube.get("Deployment", "support-stt", serving.namespace)["metadata"]["generation"]
        == generation
    )

    # Manual rollback: the asset back to v1 is immediate (no download) and heals.
    jobs_before = {j["metadata"]["name"] for j in serving.kube.list("Job", serving.namespace)}
    serving.cluster.apply(
        {
            **serving.kube.get("ModelAsset", "whisper", serving.namespace),
            "metadata": {"name": "whisper", "namespace": serving.namespace},
            "status": None,
        }
        | {
            "spec": {
                **serving.kube.get("ModelAsset", "whisper", serving.namespace)["spec"],
                "version": "v1",
            }
        }
    )
    healed = serving.wait_condition("Degraded", "False")
    assert condition(healed, "RolledBack")["status"] == "False"
    assert healed["status"]["components"]["stt"]["revision"] == good["revision"]
    new_jobs = {
        j["metadata"]["name"]
        for j in serving.kube.list("Job", serving.namespace)
        if j["metadata"]["labels"].get("app.kubernetes.io/component") == "fetch"
    }
    assert not new_jobs - jobs_before


def test_failed_model_version_degrades_the_agent_and_the_old_one_serves(serving: Setup):
    good = serving.stage("stt")
    broken = asset_manifest(serving.namespace, "whisper", serving.models, "v2")
    broken["spec"]["files"][0]["sha256"] = "0" * 64
    serving.cluster.apply(broken)
    job = download_job(serving.kube, serving.namespace, "whisper", "v2")
    assert run_fetch_job(job, serving.volume, serving.cluster).returncode == 3
    obj = serving.wait_condition("Degraded", "True", "ModelVersionFailed")
    message = condition(obj, "Degraded")["message"]
    assert "whisper version v2 failed (ChecksumMismatch); still serving v1" in message
    assert condition(obj, "Ready")["status"] == "True"
    assert obj["status"]["components"]["stt"]["revision"] == good["revision"]
    assert serving.template_revision("stt") == good["revision"]
    assert any(e["reason"] == "ModelVersionFailed" for e in serving.events("ModelVersionFailed"))

    # Pointing the asset back at v1 heals the agent.
    serving.cluster.apply(asset_manifest(serving.namespace, "whisper", serving.models, "v1"))
    serving.wait_condition("Degraded", "False")


def test_crash_looping_revision_rolls_back(serving: Setup):
    good = serving.stage("tts")
    serving.cluster.apply(
        agent_manifest(
            serving.namespace,
            tts={
                "provider": "internal",
                "model": "joe",
                "podAnnotations": {"testground.voiceops.dev/crash-loop": "true"},
            },
        )
    )
    obj = serving.wait_condition("RolledBack", "True", "CrashLoop")
    assert "restarted 5 times" in condition(obj, "RolledBack")["message"]
    assert obj["status"]["components"]["tts"]["revision"] == good["revision"]
    assert serving.template_revision("tts") == good["revision"]


@pytest.mark.no_auto_rollback
def test_without_auto_rollback_the_failure_stays_and_old_pods_serve(serving: Setup):
    good = serving.stage("stt")
    serving.bump("whisper", "never-ready")
    obj = serving.wait_condition("Degraded", "True", "ProgressDeadlineExceeded", timeout=120)
    assert condition(obj, "RolledBack")["status"] == "False"
    assert "autoRollback is off" in condition(obj, "Degraded")["message"]
    stt = obj["status"]["components"]["stt"]
    assert stt["failed"]["rolledBack"] is False
    # The failed template stays; maxUnavailable 0 keeps the old pod serving.
    assert serving.template_revision("stt") == stt["desiredRevision"] != good["revision"]
    deployment = serving.kube.get("Deployment", "support-stt", serving.namespace)
    assert deployment["status"]["readyReplicas"] == 1
    assert stt["revision"] == good["revision"]
    assert serving.events("RolloutFailed")


def test_provider_switch_both_ways_in_a_safe_order(serving: Setup, recorder: Recorder):
    # internal -> external: the route flips first, then the engine goes to zero (kept).
    serving.cluster.apply(agent_manifest(serving.namespace, llm=EXTERNAL_LLM))
    obj = serving.wait(
        "llm external", lambda o: o["status"]["components"]["llm"]["provider"] == "external"
    )
    wait_for("engine scaled to zero", lambda: serving.engine_replicas("llm") == 0)
    assert condition(obj, "Ready")["status"] == "True"
    flip = recorder.first("routes", provider="external")
    zero = recorder.first("deployment", replicas=0)
    assert flip < zero, sorted(recorder.changes, key=lambda c: c[:2])

    # external -> internal: the engine is up and available first, then the route flips.
    serving.cluster.apply(agent_manifest(serving.namespace))
    serving.wait(
        "llm internal", lambda o: o["status"]["components"]["llm"]["provider"] == "internal"
    )
    available = recorder.first("deployment", after=zero, replicas=1, available=1)
    back = recorder.first("routes", after=flip, provider="internal")
    assert zero < available < back, sorted(recorder.changes, key=lambda c: c[:2])
    assert recorder.flips() == ["internal", "external", "internal"]
    serving.wait_condition("Ready", "True")


def test_scaled_down_engine_is_removed_at_the_next_change(serving: Setup):
    serving.cluster.apply(agent_manifest(serving.namespace, llm=EXTERNAL_LLM))
    serving.wait(
        "llm external", lambda o: o["status"]["components"]["llm"]["provider"] == "external"
    )
    assert serving.kube.get("Deployment", "support-llm", serving.namespace) is not None
    # Any later edit of the spec ends the fast-switch-back window.
    serving.cluster.apply(
        agent_manifest(serving.namespace, llm=EXTERNAL_LLM, gateway={"replicas": 2})
    )
    wait_for(
        "the idle engine deleted",
        lambda: serving.kube.get("Deployment", "support-llm", serving.namespace) is None,
    )


def test_restart_mid_download_reaches_the_same_end_state(serving: Setup):
    serving.cluster.apply({**_asset_with_version(serving, "whisper", "v2")})
    job = download_job(serving.kube, serving.namespace, "whisper", "v2")
    serving.operator.stop()
    assert run_fetch_job(job, serving.volume, serving.cluster).returncode == 0
    serving.operator.start()
    obj = serving.wait_ready_with("stt", modelVersion="v2")
    assert obj["status"]["components"]["stt"]["lastGoodRevision"] == serving.template_revision(
        "stt"
    )


def test_restart_mid_rolling_update_reaches_the_same_end_state(serving: Setup):
    good = serving.stage("stt")["revision"]
    serving.bump("whisper", "v2")
    wait_for(
        "template changed", lambda: serving.template_revision("stt") != good, timeout=30, poll=0.05
    )
    serving.operator.stop()
    serving.operator.start()
    obj = serving.wait_ready_with("stt", modelVersion="v2")
    stt = obj["status"]["components"]["stt"]
    assert [h["result"] for h in stt["history"]].count("Serving") == 1
    replica_sets = json.loads(
        serving.cluster.kubectl(
            "get",
            "replicasets",
            "-n",
            serving.namespace,
            "-l",
            "app.kubernetes.io/component=stt",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert sum(rs["spec"]["replicas"] for rs in replica_sets) == 1  # no orphaned pods


def test_restart_between_route_flip_and_scale_down(serving: Setup, recorder: Recorder):
    serving.cluster.apply(agent_manifest(serving.namespace, llm=EXTERNAL_LLM))
    wait_for("route flipped", lambda: serving.routes()["llm"]["provider"] == "external", poll=0.02)
    # The engine still serves while the gateways load the new route: stop in that window.
    assert serving.engine_replicas("llm") == 1
    serving.operator.stop()
    serving.operator.start()
    serving.wait_ready_with("llm", provider="external")
    wait_for("engine at zero", lambda: serving.engine_replicas("llm") == 0)
    time.sleep(2)
    assert recorder.flips() == ["internal", "external"]  # no double flip
    assert len(serving.events("RouteSwitched")) == 1


def _asset_with_version(setup: Setup, name: str, version: str) -> dict:
    current = setup.kube.get("ModelAsset", name, setup.namespace)
    return {
        "apiVersion": current["apiVersion"],
        "kind": "ModelAsset",
        "metadata": {"name": name, "namespace": setup.namespace},
        "spec": {**current["spec"], "version": version},
    }


def test_restart_while_a_failing_revision_rolls_out_still_rolls_back(serving: Setup):
    good = serving.stage("stt")["revision"]
    serving.bump("whisper", "never-ready")
    wait_for(
        "template changed", lambda: serving.template_revision("stt") != good, timeout=30, poll=0.05
    )
    # Down while the deadline passes: the failure is found from the Deployment's status.
    serving.operator.stop()
    wait_for(
        "the progress deadline exceeded",
        lambda: any(
            c["type"] == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
            for c in (serving.kube.get("Deployment", "support-stt", serving.namespace) or {})
            .get("status", {})
            .get("conditions", [])
        ),
        timeout=60,
    )
    serving.operator.start()
    obj = serving.wait_condition("RolledBack", "True", "ProgressDeadlineExceeded", timeout=90)
    assert obj["status"]["components"]["stt"]["revision"] == good
    assert serving.template_revision("stt") == good
    time.sleep(3)
    assert len(serving.events("RolledBack")) == 1


def test_restart_while_switching_back_to_internal(serving: Setup, recorder: Recorder):
    serving.cluster.apply(agent_manifest(serving.namespace, llm=EXTERNAL_LLM))
    serving.wait(
        "llm external", lambda o: o["status"]["components"]["llm"]["provider"] == "external"
    )
    serving.operator.stop()
    # The switch back is asked for while the operator is down, and it stops again midway.
    serving.cluster.apply(agent_manifest(serving.namespace))
    serving.operator.start()
    wait_for("the engine scaled back up", lambda: serving.engine_replicas("llm") == 1, poll=0.02)
    serving.operator.stop()
    serving.operator.start()
    serving.wait_ready_with("llm", provider="internal")
    time.sleep(2)
    assert recorder.flips() == ["internal", "external", "internal"]  # no double flip
    assert len(serving.events("RouteSwitched")) == 2


def test_operator_killed_mid_rollout_and_mid_drain_reaches_the_same_end_state(
    serving: Setup, recorder: Recorder, tmp_path: Path
):
    """SIGKILL, not a stop: no handler finishes, whatever was half-applied stays so."""
    serving.operator.stop()
    log = tmp_path / "operator.log"

    def start():
        proc = operator_process(serving.namespace, serving.operator.kubeconfig, log)
        proc.start()
        return proc

    proc = start()
    try:
        good = serving.stage("stt")["revision"]
        serving.bump("whisper", "v2")
        wait_for(
            "template changed",
            lambda: serving.template_revision("stt") != good,
            timeout=30,
            poll=0.02,
        )
        proc.popen.kill()
        proc.popen.wait(10)
        proc = start()
        obj = serving.wait_ready_with("stt", modelVersion="v2")
        stt = obj["status"]["components"]["stt"]
        assert [h["result"] for h in stt["history"]].count("Serving") == 1
        assert stt["lastGoodRevision"] == serving.template_revision("stt")

        serving.cluster.apply(agent_manifest(serving.namespace, llm=EXTERNAL_LLM))
        wait_for(
            "route flipped", lambda: serving.routes()["llm"]["provider"] == "external", poll=0.02
        )
        proc.popen.kill()
        proc.popen.wait(10)
        assert serving.engine_replicas("llm") == 1  # killed while the engine drains
        proc = start()
        wait_for("engine at zero", lambda: serving.engine_replicas("llm") == 0)
        time.sleep(2)
        assert recorder.flips() == ["internal", "external"]  # no double flip
        # Events are recorded after the status write, so a SIGKILL between the two loses
        # the Event (status, the record, has the switch); it is never recorded twice.
        assert len(serving.events("RouteSwitched")) <= 1
        assert serving.stage("llm")["provider"] == "external"
    finally:
        proc.stop()
