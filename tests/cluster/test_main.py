"""`voice-operator`, the console script the image runs, as a process on the test ground with
the chart's ServiceAccount identity: JSON log lines, kopf's liveness, our readiness, metrics
after a reconcile, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from testground import Cluster
from testground.harness import VENV_BIN, wait_for
from testground.processes import free_port

from voice_operator.kube import Kube
from voice_operator.main import READINESS_PATH, metrics_app

# Straight to 127.0.0.1, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str) -> tuple[int, str]:
    """(status, body); status 0 while nothing listens yet."""
    try:
        with _OPENER.open(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def minimal_asset(namespace: str) -> dict:
    """test_modelasset's voice asset; nothing downloads it, a reconcile is all it needs."""
    return {
        "apiVersion": "voiceops.dev/v1alpha1",
        "kind": "ModelAsset",
        "metadata": {"name": "joe", "namespace": namespace},
        "spec": {
            "engine": "tts",
            "format": "onnx",
            "version": "v1",
            "files": [
                {"url": "http://127.0.0.1:9/joe.onnx", "sha256": "a" * 64, "path": "joe.onnx"},
                {
                    "url": "http://127.0.0.1:9/joe.onnx.json",
                    "sha256": "b" * 64,
                    "path": "joe.onnx.json",
                },
            ],
            "storage": {"size": "1Gi"},
        },
    }


def reconciles(metrics: str, kind: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "voice_operator_reconciles_total" and sample.labels == {"kind": kind}:
                return sample.value
    return 0.0


@pytest.mark.unit
def test_readyz_is_503_until_the_flag_is_raised_and_other_paths_are_metrics() -> None:
    ready = threading.Event()
    app = metrics_app(ready)

    def call(path: str) -> tuple[str, bytes]:
        seen: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            seen.append(status)

        body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
        return seen[0], body

    assert call(READINESS_PATH)[0] == "503 Service Unavailable"
    ready.set()
    assert call(READINESS_PATH) == ("200 OK", b"ready\n")
    ready.clear()
    assert call(READINESS_PATH)[0].startswith("503")
    status, body = call("/metrics")
    assert status == "200 OK"
    assert b"voice_operator_reconciles_total" in body


@pytest.mark.cluster
def test_console_script_logs_json_probes_and_metrics_then_stops_on_sigterm(
    namespace: str,
    operator_settings: None,
    operator_kubeconfig: Path,
    kube: Kube,
    cluster: Cluster,
    tmp_path: Path,
) -> None:
    metrics_port, liveness_port = free_port(), free_port()
    base = f"http://127.0.0.1:{metrics_port}"
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    argv = [
        str(VENV_BIN / "voice-operator"),
        f"--namespace={namespace}",
        f"--metrics-port={metrics_port}",
        f"--liveness=http://127.0.0.1:{liveness_port}/healthz",
    ]
    env = {**os.environ, "KUBECONFIG": str(operator_kubeconfig), "PYTHONUNBUFFERED": "1"}

    def logs() -> str:
        return f"stdout:\n{stdout.read_text()}\nstderr:\n{stderr.read_text()}"

    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    try:

        def alive_and(check: Any) -> Any:
            def poll() -> Any:
                assert proc.poll() is None, f"voice-operator exited ({proc.returncode})\n{logs()}"
                return check()

            return poll

        statuses: list[int] = []

        def readyz() -> bool:
            statuses.append(http_get(base + READINESS_PATH)[0])
            return statuses[-1] == 200

        wait_for("/readyz 200", alive_and(readyz), timeout=90)
        assert set(statuses) <= {0, 503, 200}, statuses
        status, _ = http_get(f"http://127.0.0.1:{liveness_port}/healthz")
        assert status == 200

        cluster.apply(minimal_asset(namespace))

        def phase() -> str | None:
            obj = kube.get("ModelAsset", "joe", namespace) or {}
            return (obj.get("status") or {}).get("phase")

        wait_for("the asset's status.phase", alive_and(phase), timeout=60)

        def counted() -> bool:
            status, metrics = http_get(base + "/metrics")
            return status == 200 and reconciles(metrics, "ModelAsset") >= 1

        wait_for("a ModelAsset reconcile in /metrics", alive_and(counted), timeout=30)

        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"voice-operator still running 30 s after SIGTERM\n{logs()}")
        assert code == 0, logs()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    lines = [line for f in (stdout, stderr) for line in f.read_text().splitlines() if line.strip()]
    assert lines, "voice-operator logged nothing"
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}\n{logs()}")
        assert isinstance(record, dict) and "message" in record, line
