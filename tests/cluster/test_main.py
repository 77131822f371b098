"""`voice-operator`, the console script the image runs, as a process on the test ground with
the chart's ServiceAccount identity: JSON log lines, kopf's liveness, our readiness, metrics
after a reconcile, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
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
from testground.harness import ServedModel, asset_manifest, operator_process, wait_for
from testground.processes import free_port

from voice_operator.kube import Kube
from voice_operator.main import READINESS_PATH, metrics_app, seniority_priority

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

        def start_response(status: str, _headers: Any, _exc_info: Any = None) -> Any:
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


@pytest.mark.unit
def test_an_older_replica_has_the_higher_peering_priority_below_kopfs_own() -> None:
    # kopf pauses every operator that sees a live peer of equal priority: identical
    # replicas must each get their own, and the one already at work must rank highest.
    older, newer = seniority_priority(1_800_000_000.0), seniority_priority(1_800_000_000.001)
    assert older > newer
    assert max(older, newer) < 100  # `kopf freeze` (100) and `kopf run --dev` (666) still win


@pytest.mark.cluster
@pytest.mark.usefixtures("operator_settings")
def test_console_script_logs_json_probes_and_metrics_then_stops_on_sigterm(
    namespace: str,
    operator_kubeconfig: Path,
    kube: Kube,
    cluster: Cluster,
    model_server: dict[str, ServedModel],
    tmp_path: Path,
) -> None:
    metrics_port, liveness_port = free_port(), free_port()
    base = f"http://127.0.0.1:{metrics_port}"
    log = tmp_path / "voice-operator.log"
    operator = operator_process(
        namespace, operator_kubeconfig, log, metrics_port=metrics_port, liveness_port=liveness_port
    )

    def logs() -> str:
        return log.read_text()

    operator.start()
    proc = operator.popen
    assert proc is not None
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

        cluster.apply(asset_manifest(namespace, "joe", model_server))

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

    lines = [line for line in logs().splitlines() if line.strip()]
    assert lines, "voice-operator logged nothing"
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}\n{logs()}")
        assert isinstance(record, dict) and "message" in record, line
