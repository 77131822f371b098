"""The README's install path on a real kubelet node: the images built here, `helm install`,
the model mirror and the examples applied as written, a voice turn through the gateway
Service, a model bump that keeps serving, and a revision that cannot start rolled back.

The tests of this module run in order on one installation, as a user's session would."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from testground import Cluster
from testground.harness import wait_for

from node.userpath import (
    QUESTION,
    REPO,
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    ClientPod,
    TurnLoop,
    build_images,
    condition,
    get,
    port_forward,
    transcribe,
    turn,
    wer,
)

pytestmark = pytest.mark.node
CHART = REPO / "charts" / "voice-operator"
EXAMPLES = REPO / "examples"
RELEASE_NAMESPACE = "voice-system"
AGENT = "support"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
ENGINE_IMAGE = f"localhost/voice-engines:{APP_VERSION}"


@dataclass
class Installation:
    """What the user has after the README's steps, and how long each took."""

    cluster: Cluster
    namespace: str
    timings: dict[str, float] = field(default_factory=dict)

    def agent(self) -> dict[str, Any]:
        return get(self.cluster, "voiceagent", AGENT, self.namespace)

    def component(self, name: str) -> dict[str, Any]:
        return ((self.agent().get("status") or {}).get("components") or {}).get(name) or {}

    def ready(self) -> bool:
        agent = self.agent()
        ready = condition(agent, "Ready")
        return (
            ready.get("status") == "True"
            and ready.get("observedGeneration") == agent["metadata"]["generation"]
        )

    def kubectl(self, *args: str, **kw: Any):
        return self.cluster.kubectl(*args, "-n", self.namespace, **kw)

    def patch(self, kind: str, name: str, spec: dict[str, Any]) -> None:
        """`kubectl patch --type=merge` of the spec, as a user edits a resource."""
        self.kubectl("patch", kind, name, "--type=merge", "-p", json.dumps({"spec": spec}))


@pytest.fixture(scope="module")
def installation(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Installation]:
    t0 = time.monotonic()
    if cluster.local:
        real_node = request.getfixturevalue("real_node")
        for image in build_images().values():
            real_node.load_image(image)
    # Against a user's cluster (VOICE_TEST_USE_KUBECONFIG=1) the images are already loaded
    # into its nodes, as the README's install section does with `kind load image-archive`.
    timings = {"images_built_and_loaded": time.monotonic() - t0}

    namespace = f"user-path-{uuid.uuid4().hex[:5]}"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {
                    "testground": "true",
                    "pod-security.kubernetes.io/enforce": "restricted",
                },
            },
        }
    )
    inst = Installation(cluster, namespace, timings)

    t1 = time.monotonic()
    cluster.helm(
        "upgrade",
        "--install",
        "voice-operator",
        str(CHART),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout=5m",
    )
    timings["helm_install_to_operator_ready"] = time.monotonic() - t1
    cluster.kubectl("apply", "-f", str(EXAMPLES / "model-mirror.yaml"))
    cluster.kubectl(
        "rollout", "status", "deployment/model-mirror", "-n", RELEASE_NAMESPACE, "--timeout=180s"
    )
    inst.kubectl("apply", "-f", str(EXAMPLES / "model-assets.yaml"))
    inst.kubectl(
        "wait", "--for=condition=Ready", "modelasset", "--all", "--timeout=300s", timeout=320
    )
    timings["helm_install_to_assets_ready"] = time.monotonic() - t1
    inst.kubectl("apply", "-f", str(EXAMPLES / "voice-agent.yaml"))
    wait_for("the example agent Ready", inst.ready, timeout=600, poll=2)
    timings["helm_install_to_agent_ready"] = time.monotonic() - t1
    try:
        yield inst
    finally:
        print("node-tier timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}))
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_operator_runs_as_a_pod_on_the_real_node(installation: Installation):
    pods = json.loads(
        installation.cluster.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-o", "json").stdout
    )["items"]
    operator = [
        p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/name") == "voice-operator"
    ]
    assert operator, [p["metadata"]["name"] for p in pods]
    node = installation.cluster.kubectl(
        "get", "node", operator[0]["spec"]["nodeName"], "-o", "json"
    ).stdout
    # A kubelet runs it: the real node here, any node of a user's cluster, never kwok.
    labels = json.loads(node)["metadata"]["labels"]
    assert (
        labels.get("type") == "real" if installation.cluster.local else labels.get("type") != "kwok"
    )


def test_the_download_jobs_wrote_every_version_to_a_real_volume(installation: Installation):
    for asset in ("whisper-tiny-en", "smollm2", "piper-joe"):
        status = get(installation.cluster, "modelasset", asset, installation.namespace)["status"]
        assert status["phase"] == "Ready", status
        assert status["currentVersion"] == "v1"
        (version,) = [v for v in status["versions"] if v["version"] == "v1"]
        assert version["bytes"] > 0


def test_a_voice_turn_through_the_gateway_service_speaks_the_reply(
    installation: Installation,
):
    wav = QUESTION.read_bytes()
    with port_forward(
        installation.cluster, installation.namespace, f"svc/{AGENT}-gateway", 8080
    ) as gw:
        body = turn(gw, wav)
    # examples/question.wav is Piper saying "Hello! What color is the sky on a clear day?"
    assert wer("Hello! What color is the sky on a clear day?", body["transcript"]) < 0.2, body
    assert body["reply"].strip()
    assert len(body["audio_bytes"]) > 44 + 16000, "less than half a second of reply audio"
    # The same turn as `make demo`'s (POST /v1/turn: the whole reply's audio), a few times,
    # for the README's in-cluster figure.
    totals = [body["timings"]["total_ms"]]
    with port_forward(
        installation.cluster, installation.namespace, f"svc/{AGENT}-gateway", 8080
    ) as gw:
        totals += [turn(gw, wav)["timings"]["total_ms"] for _ in range(4)]
    installation.timings["turn_total_ms_median"] = statistics.median(totals)
    # What was spoken is what was written: the agent's own STT hears the reply back.
    with port_forward(
        installation.cluster, installation.namespace, f"svc/{AGENT}-stt", 8080
    ) as stt:
        heard = transcribe(stt, body["audio_bytes"])
    assert wer(body["reply"], heard) < 0.35, (body["reply"], heard)


def test_a_model_bump_rolls_out_on_real_readiness_and_keeps_serving(
    installation: Installation,
):
    before = installation.component("stt")
    wav = QUESTION.read_bytes()
    with (
        port_forward(
            installation.cluster, installation.namespace, f"svc/{AGENT}-gateway", 8080
        ) as gw,
        TurnLoop(gw, wav) as loop,
    ):
        wait_for("a first turn", lambda: loop.ok or loop.failures, timeout=120)
        t0 = time.monotonic()
        installation.patch("modelasset", "whisper-tiny-en", {"version": "v2"})
        wait_for(
            "stt serving v2",
            lambda: (
                installation.component("stt").get("modelVersion") == "v2" and installation.ready()
            ),
            timeout=600,
            poll=2,
        )
        installation.timings["model_bump_to_serving"] = time.monotonic() - t0
        turns_before = loop.ok
        wait_for("a turn on v2", lambda: loop.ok > turns_before + 1 or loop.failures, timeout=120)
    assert loop.failures == []
    assert loop.ok >= 3
    after = installation.component("stt")
    assert after["revision"] != before["revision"]


FAKE_GROQ = REPO / "tests" / "gateway" / "fakevendors.py"
# The fake vendor's program in its pod: the same wire format the gateway tests use.
FAKE_GROQ_MAIN = """
import os
import uvicorn
import fakevendors
vendor = fakevendors.OpenAI(key=os.environ["VENDOR_KEY"])
uvicorn.run(vendor.app(), host="0.0.0.0", port=8080, log_level="warning")
"""


def start_fake_groq(inst: Installation, key: str) -> str:
    """Groq's chat API as a pod of the engine image in the user's namespace; its URL."""
    files = {"fakevendors.py": FAKE_GROQ.read_text(), "main.py": FAKE_GROQ_MAIN}
    labels = {"app.kubernetes.io/name": "fake-groq"}
    inst.cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "fake-groq", "namespace": inst.namespace},
            "data": files,
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "fake-groq", "namespace": inst.namespace, "labels": labels},
            "spec": {
                "securityContext": RESTRICTED_POD,
                "containers": [
                    {
                        "name": "vendor",
                        "image": ENGINE_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["python", "/vendor/main.py"],
                        "env": [
                            {"name": "PYTHONPATH", "value": "/vendor"},
                            {"name": "VENDOR_KEY", "value": key},
                        ],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {
                            "tcpSocket": {"port": "http"},
                            "periodSeconds": 1,
                        },
                        "securityContext": RESTRICTED_CONTAINER,
                        "volumeMounts": [{"name": "vendor", "mountPath": "/vendor"}],
                    }
                ],
                "volumes": [{"name": "vendor", "configMap": {"name": "fake-groq"}}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "fake-groq", "namespace": inst.namespace},
            "spec": {"selector": labels, "ports": [{"port": 8080, "targetPort": "http"}]},
        },
    )
    inst.kubectl("wait", "--for=condition=Ready", "pod/fake-groq", "--timeout=120s")
    return f"http://fake-groq.{inst.namespace}.svc.cluster.local:8080/openai/v1"


def settled_on(client: ClientPod, provider: str, since: float, run: int = 6) -> float | None:
    """Seconds from `since` to the first of `run` turns in a row that `provider` answered
    (the client's connections spread over every gateway pod, so by then each has loaded
    the new route: the operator's flip, the kubelet's refresh of the routes file, the
    gateway's reload), or None while that has not happened."""
    turns = [t for t in client.turns() if t["at"] > since and t["status"] == 200]
    for i in range(len(turns) - run + 1):
        if all(t["providers"]["llm"]["provider"] == provider for t in turns[i : i + run]):
            return float(turns[i]["at"] - since)
    return None


def route_flip(inst: Installation, provider: str) -> float:
    """When the operator moved the LLM route (its status names the provider serving):
    from then on the gateways' routes file says so, once the kubelet refreshes it."""
    wait_for(
        f"the route moved to {provider}",
        lambda: inst.component("llm").get("provider") == provider,
        timeout=300,
        poll=0.5,
    )
    return time.time()


def test_switching_a_stage_to_a_vendor_and_back_fails_no_turn(installation: Installation):
    inst = installation
    url = start_fake_groq(inst, key="gsk-node-tier")
    inst.kubectl("create", "secret", "generic", "groq", "--from-literal=api-key=gsk-node-tier")
    internal_llm = inst.agent()["spec"]["llm"]
    gateway = f"http://{AGENT}-gateway.{inst.namespace}.svc.cluster.local:8080"
    client = ClientPod(inst.cluster, inst.namespace, gateway, ENGINE_IMAGE).start()
    try:
        wait_for("a first turn", client.turns, timeout=120)
        external = {
            "provider": "external",
            "external": {
                "vendor": "groq",
                "model": "llama-3.1-8b-instant",
                "url": url,
                "apiKeySecretRef": {"name": "groq", "key": "api-key"},
            },
        }
        t0 = time.time()
        inst.patch("voiceagent", AGENT, {"llm": external})
        flipped = route_flip(inst, "external")
        settled = wait_for(
            "turns answered by the vendor only", lambda: settled_on(client, "groq", t0), 400, 2
        )
        inst.timings["switch_to_vendor_all_turns"] = settled
        inst.timings["routes_refresh_to_vendor"] = t0 + settled - flipped
        wait_for("the agent Ready on the vendor", inst.ready, timeout=300, poll=2)
        t1 = time.time()
        inst.patch("voiceagent", AGENT, {"llm": {"provider": "internal", "external": None}})
        flipped = route_flip(inst, "internal")
        settled = wait_for(
            "turns answered internally only", lambda: settled_on(client, "internal", t1), 400, 2
        )
        inst.timings["switch_back_all_turns"] = settled
        inst.timings["routes_refresh_to_internal"] = t1 + settled - flipped
        wait_for("the agent Ready on its own engine", inst.ready, timeout=300, poll=2)
        assert client.failures() == []
        inst.timings["turns_during_switches"] = len(client.turns())
    finally:
        client.stop()
    assert inst.agent()["spec"]["llm"] == internal_llm
    # The chart's routeSettleSeconds keeps a left engine serving at least this long.
    values = inst.cluster.helm(
        "get", "values", "voice-operator", "-n", RELEASE_NAMESPACE, "--all", "-o", "json"
    ).stdout
    settle = float(json.loads(values)["operator"]["routeSettleSeconds"])
    assert settle > inst.timings["routes_refresh_to_vendor"]
    assert settle > inst.timings["routes_refresh_to_internal"]


def test_a_revision_that_cannot_start_rolls_back_by_itself(installation: Installation):
    """A model file that fails to load: the download is valid (its digest matches), the
    engine cannot use it, the rollout's deadline passes on real readiness, and the last
    good revision serves again without the spec being written."""
    installation.patch("voiceagent", AGENT, {"rollout": {"progressDeadlineSeconds": 60}})
    wait_for("the agent Ready after the deadline change", installation.ready, timeout=300, poll=2)
    good = installation.component("stt")
    asset = get(installation.cluster, "modelasset", "whisper-tiny-en", installation.namespace)
    files = asset["spec"]["files"]
    config = next(f for f in files if f["path"] == "config.json")
    broken = [
        {**f, "url": config["url"], "sha256": config["sha256"]} if f["path"] == "model.bin" else f
        for f in files
    ]
    spec_before = installation.agent()["spec"]
    t0 = time.monotonic()
    installation.patch("modelasset", "whisper-tiny-en", {"version": "v3-broken", "files": broken})

    def rolled_back() -> bool:
        agent = installation.agent()
        return condition(agent, "RolledBack").get("status") == "True"

    wait_for("the automatic rollback", rolled_back, timeout=600, poll=2)
    wait_for(
        "the last good revision serving",
        lambda: (
            installation.component("stt").get("revision") == good["revision"]
            and (installation.agent().get("status") or {})
            .get("components", {})
            .get("stt", {})
            .get("readyReplicas", 0)
            >= 1
        ),
        timeout=300,
        poll=2,
    )
    installation.timings["failed_revision_to_old_serving"] = time.monotonic() - t0
    assert installation.agent()["spec"] == spec_before, "the operator wrote the spec"
    with port_forward(
        installation.cluster, installation.namespace, f"svc/{AGENT}-gateway", 8080
    ) as gw:
        assert turn(gw, QUESTION.read_bytes())["reply"].strip()
