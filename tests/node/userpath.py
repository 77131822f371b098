"""The user's tools on the node tier: the images scripts/build-images.sh makes, kubectl
and helm as the README runs them, port-forwards to Services, and voice turns."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from testground import Cluster
from testground.processes import StartupError
from testground.speech import wer as wer

REPO = Path(__file__).resolve().parents[2]
BUILD_IMAGES = REPO / "scripts" / "build-images.sh"
QUESTION = REPO / "examples" / "question.wav"


# What the restricted Pod Security Standard asks of the test's own pods.
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def build_images() -> dict[str, Path]:
    """`name:tag -> docker-archive` for every image the project ships (cached by the
    script, so a warm call costs seconds)."""
    result = subprocess.run(
        ["bash", str(BUILD_IMAGES)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise StartupError(f"building the images failed:\n{result.stderr[-4000:]}")
    images = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].endswith(".tar"):
            images[parts[0]] = Path(parts[1])
    if not images:
        raise StartupError(f"scripts/build-images.sh printed no images:\n{result.stdout}")
    return images


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return {}


@contextlib.contextmanager
def port_forward(cluster: Cluster, namespace: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward` as a user runs it; yields http://127.0.0.1:<local port>."""
    proc = subprocess.Popen(
        [
            str(cluster.bin_dir / "kubectl"),
            f"--kubeconfig={cluster.kubeconfig}",
            "port-forward",
            "-n",
            namespace,
            target,
            f":{port}",
            "--address=127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not found:
            proc.kill()
            error = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"port-forward to {target} failed: {line}{error}")
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


def turn(gateway: str, wav: bytes, timeout: float = 120) -> dict[str, Any]:
    """One voice turn; raises with the gateway's error body when it fails."""
    response = httpx.post(
        f"{gateway}/v1/turn",
        files={"file": ("question.wav", wav, "audio/wav")},
        timeout=timeout,
    )
    if response.status_code != 200:
        raise AssertionError(f"turn failed ({response.status_code}): {response.text[:500]}")
    body = response.json()
    body["audio_bytes"] = base64.b64decode(body["audio"]["base64"])
    return body


def transcribe(stt: str, wav: bytes) -> str:
    response = httpx.post(
        f"{stt}/v1/audio/transcriptions",
        files={"file": ("reply.wav", wav, "audio/wav")},
        data={"model": "whisper-1"},
        timeout=120,
    )
    response.raise_for_status()
    return str(response.json()["text"])


@dataclass
class TurnLoop:
    """Voice turns one after another through a gateway while something else happens (a
    rollout, a provider switch): every failure is kept with its time and message."""

    gateway: str
    wav: bytes
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    providers: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                body = turn(self.gateway, self.wav)
                self.ok += 1
                self.providers.append(body.get("providers") or {})
            except Exception as e:  # every failure is the finding
                self.failures.append(f"{time.strftime('%H:%M:%S')} {e}")

    def __enter__(self) -> TurnLoop:
        self._thread = threading.Thread(target=self._run, daemon=True, name="turn-loop")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(180)


# A voice client in a pod: turns one after another through the gateway Service, as an
# in-cluster caller reaches it (kube-proxy picks a ready gateway per connection, so a
# gateway rollout is seen as a user sees it). One JSON line per turn on stdout.
CLIENT_MAIN = """
import json, os, time
import httpx
url = os.environ["GATEWAY_URL"] + "/v1/turn"
wav = open("/client/question.wav", "rb").read()
while True:
    at = time.time()
    try:
        r = httpx.post(url, files={"file": ("q.wav", wav, "audio/wav")}, timeout=120)
        body = r.json()
        line = {"at": at, "status": r.status_code, "providers": body.get("providers"),
                "error": body.get("error")}
    except Exception as e:
        line = {"at": at, "status": 0, "error": repr(e)}
    print(json.dumps(line), flush=True)
"""


@dataclass
class ClientPod:
    """Start with `start()`; `turns()` reads what it has done so far."""

    cluster: Cluster
    namespace: str
    gateway_url: str
    image: str
    name: str = "voice-client"

    def start(self) -> ClientPod:
        self.cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "data": {"main.py": CLIENT_MAIN},
                "binaryData": {"question.wav": base64.b64encode(QUESTION.read_bytes()).decode()},
            },
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "securityContext": RESTRICTED_POD,
                    "containers": [
                        {
                            "name": "client",
                            "image": self.image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "/client/main.py"],
                            "env": [{"name": "GATEWAY_URL", "value": self.gateway_url}],
                            "securityContext": RESTRICTED_CONTAINER,
                            "volumeMounts": [{"name": "client", "mountPath": "/client"}],
                        }
                    ],
                    "volumes": [{"name": "client", "configMap": {"name": self.name}}],
                },
            },
        )
        self.cluster.kubectl(
            "wait",
            "--for=condition=Ready",
            f"pod/{self.name}",
            "-n",
            self.namespace,
            "--timeout=120s",
        )
        return self

    def turns(self) -> list[dict[str, Any]]:
        out = self.cluster.kubectl("logs", self.name, "-n", self.namespace, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def failures(self) -> list[dict[str, Any]]:
        return [t for t in self.turns() if t["status"] != 200]

    def stop(self) -> None:
        self.cluster.kubectl(
            "delete", "pod", self.name, "-n", self.namespace, "--wait=false", check=False
        )
