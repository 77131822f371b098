"""Rollout and rollback times on the kwok test ground, against a baseline in the same run.

    .venv/bin/python benchmarks/rollout.py [--runs 5]

Starts the test ground (a real control plane; kwok makes pods ready at once, so what is
measured is control-plane and operator latency, not image pulls or model loading), runs the
operator in-process as the chart's ServiceAccount, and measures:

- spec edit -> new revision serving: a VoiceAgent edit that changes an engine's pods, until
  its status reports the new revision as last good and Ready. Baseline: the same kind of
  change made directly to a plain Deployment, until it is rolled out.
- model version Ready -> serving: a ModelAsset's new version turns Ready (the download is
  not timed), until the agent serves it.
- failure -> rollback complete: a revision whose pods never become ready; from the moment
  the Deployment reports ProgressDeadlineExceeded until the agent is RolledBack and the old
  revision is available again. Baseline: a person's `kubectl rollout undo` at that moment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from testground import KWOK_TAINT, NEVER_READY, Cluster, kwok_placement, open_cluster  # noqa: E402
from testground.harness import (  # noqa: E402
    Operator,
    condition,
    install_operator_identity,
    make_ready_asset,
    serve_models,
)

from voice_operator.kube import Kube  # noqa: E402

NAMESPACE = "bench"
POLL = 0.02


def timed(until: Callable[[], Any], timeout: float = 120) -> float:
    """Seconds until `until()` is truthy, polling every 20 ms."""
    start = time.monotonic()
    while not until():
        if time.monotonic() - start > timeout:
            raise TimeoutError("benchmark step timed out")
        time.sleep(POLL)
    return time.monotonic() - start


def rolled_out(kube: Kube, name: str) -> bool:
    d = kube.get("Deployment", name, NAMESPACE)
    if d is None:
        return False
    s, want = d.get("status") or {}, d["spec"]["replicas"]
    return (
        s.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and s.get("updatedReplicas") == want
        and s.get("availableReplicas") == want
        and s.get("replicas") == want
    )


def agent_serving(kube: Kube, component: str, check: Callable[[dict], bool]) -> bool:
    agent = kube.get("VoiceAgent", "support", NAMESPACE) or {}
    status = agent.get("status") or {}
    stage = (status.get("components") or {}).get(component) or {}
    return (
        status.get("observedGeneration") == agent["metadata"]["generation"]
        and condition(agent, "Ready").get("status") == "True"
        and stage.get("revision") == stage.get("desiredRevision")
        and check(stage)
    )


def agent(stt: dict, deadline: int = 600) -> dict:
    return {
        "apiVersion": "voiceops.dev/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": "support", "namespace": NAMESPACE},
        "spec": {
            "stt": {"model": "whisper", **stt},
            "llm": {"model": "smollm"},
            "tts": {"model": "joe"},
            "rollout": {"progressDeadlineSeconds": deadline},
        },
    }


def baseline_deployment(annotations: dict | None = None, env: str = "0") -> dict:
    labels = {"app": "baseline"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "baseline", "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "progressDeadlineSeconds": 10,
            "selector": {"matchLabels": labels},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations or {}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "example.invalid/app:1",
                            "env": [{"name": "EDIT", "value": env}],
                        }
                    ],
                    **kwok_placement(),
                },
            },
        },
    }


def bench_spec_edit(cluster: Cluster, kube: Kube, runs: int) -> tuple[list[float], list[float]]:
    ours, base = [], []
    cluster.apply(baseline_deployment())
    timed(lambda: rolled_out(kube, "baseline"))
    for i in range(runs):
        threads = 3 + i  # a new value each run: a new revision
        cluster.apply(agent({"settings": {"threads": threads}}))
        ours.append(
            timed(
                lambda t=threads: agent_serving(
                    kube, "stt", lambda s, t=t: s["lastGood"]["settings"]["threads"] == t
                )
            )
        )
        cluster.apply(baseline_deployment(env=str(i + 1)))
        base.append(timed(lambda: rolled_out(kube, "baseline")))
    return ours, base


def bench_version_bump(
    cluster: Cluster, kube: Kube, models, volume: Path, runs: int
) -> list[float]:
    times = []
    for i in range(runs):
        version = f"v{i + 2}"
        make_ready_asset(cluster, kube, NAMESPACE, "whisper", models, volume, version=version)
        times.append(
            timed(
                lambda v=version: agent_serving(kube, "stt", lambda s, v=v: s["modelVersion"] == v)
            )
        )
    return times


def deadline_exceeded(kube: Kube, name: str) -> bool:
    d = kube.get("Deployment", name, NAMESPACE) or {}
    return any(
        c["type"] == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
        for c in (d.get("status") or {}).get("conditions", [])
    )


def bench_rollback(cluster: Cluster, kube: Kube, runs: int) -> tuple[list[float], list[float]]:
    ours, base = [], []
    for i in range(runs):
        good = agent({"podAnnotations": {"bench/run": str(i)}}, deadline=10)
        cluster.apply(good)
        timed(lambda: agent_serving(kube, "stt", lambda _: True))
        broken = agent({"podAnnotations": {"bench/run": str(i), NEVER_READY: "true"}}, deadline=10)
        cluster.apply(broken)
        timed(lambda: deadline_exceeded(kube, "support-stt"), timeout=60)

        def rolled_back() -> bool:
            obj = kube.get("VoiceAgent", "support", NAMESPACE) or {}
            return condition(obj, "RolledBack").get("status") == "True" and rolled_out(
                kube, "support-stt"
            )

        ours.append(timed(rolled_back))

        cluster.apply(baseline_deployment(env=f"good-{i}"), force=True)
        timed(lambda: rolled_out(kube, "baseline"))
        cluster.apply(baseline_deployment({NEVER_READY: "true"}, env=f"bad-{i}"), force=True)
        timed(lambda: deadline_exceeded(kube, "baseline"), timeout=60)
        start = time.monotonic()
        cluster.kubectl("rollout", "undo", "deployment/baseline", "-n", NAMESPACE)
        timed(lambda: rolled_out(kube, "baseline"))
        base.append(time.monotonic() - start)
    return ours, base


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):6.2f} s  (min {min(values):.2f}, "
        f"max {max(values):.2f}, n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ["VOICE_OPERATOR_ENGINE_NODE_SELECTOR"] = json.dumps({"type": "kwok"})
    os.environ["VOICE_OPERATOR_ENGINE_TOLERATIONS"] = json.dumps(
        [{**KWOK_TAINT, "operator": "Equal"}]
    )
    cluster = open_cluster()
    operator: Operator | None = None
    try:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        kube = Kube()
        work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
        operator_kubeconfig = install_operator_identity(cluster, work)
        cluster.kubectl("create", "namespace", NAMESPACE)
        cluster.kubectl(
            "wait", "--for=create", "serviceaccount/default", "-n", NAMESPACE, "--timeout=60s"
        )
        operator = Operator(NAMESPACE, operator_kubeconfig).start()
        with serve_models() as models:
            for name in ("whisper", "smollm", "joe"):
                make_ready_asset(cluster, kube, NAMESPACE, name, models, work)
            cluster.apply(agent({}))
            timed(lambda: agent_serving(kube, "stt", lambda _: True))
            edit, edit_base = bench_spec_edit(cluster, kube, args.runs)
            bump = bench_version_bump(cluster, kube, models, work, max(1, args.runs // 2))
        back, back_base = bench_rollback(cluster, kube, max(1, args.runs // 2))
    finally:
        if operator:
            operator.stop()
        cluster.close()

    ratio_edit = statistics.median(edit) / statistics.median(edit_base)
    ratio_back = statistics.median(back) / statistics.median(back_base)
    print("rollout benchmark (kwok test ground, operator in-process)")
    print(f"  spec edit -> new revision serving    {summary(edit)}")
    print(f"    baseline: plain Deployment rollout {summary(edit_base)}  ratio {ratio_edit:.2f}")
    print(f"  model version Ready -> serving       {summary(bump)}")
    print(f"  deadline exceeded -> rolled back     {summary(back)}")
    print(f"    baseline: kubectl rollout undo     {summary(back_base)}  ratio {ratio_back:.2f}")


if __name__ == "__main__":
    main()
