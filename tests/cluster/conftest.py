"""Cluster-tier fixtures: the operator running in-process against the test ground as the
chart's ServiceAccount, the real model files served over HTTP, and status capture."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from testground import KWOK_TAINT, Cluster
from testground.harness import Operator, ServedModel, install_operator_identity, serve_models

from voice_operator.kube import Kube


@pytest.fixture(scope="session")
def kube(cluster: Cluster) -> Kube:  # noqa: ARG001 (Kube() reads the KUBECONFIG it sets)
    return Kube()


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every operator in these tests runs as the chart's ServiceAccount, so a permission the
    chart lacks fails a test."""
    return install_operator_identity(cluster, tmp_path_factory.mktemp("operator"))


@pytest.fixture
def operator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine pods go to kwok's nodes, as an operator's placement setting would send them
    to a GPU pool."""
    monkeypatch.setenv("VOICE_OPERATOR_ENGINE_NODE_SELECTOR", json.dumps({"type": "kwok"}))
    monkeypatch.setenv(
        "VOICE_OPERATOR_ENGINE_TOLERATIONS", json.dumps([{**KWOK_TAINT, "operator": "Equal"}])
    )
    monkeypatch.setenv("VOICE_OPERATOR_RESYNC_SECONDS", "30")
    # Engines left by a switch to external drain for a few seconds, not the default 90.
    monkeypatch.setenv("VOICE_OPERATOR_ROUTE_SETTLE_SECONDS", "3")


@pytest.fixture
def operator(
    namespace: str,
    operator_settings: None,  # noqa: ARG001 (its environment is what the operator reads)
    operator_kubeconfig: Path,
    cluster: Cluster,
) -> Iterator[Operator]:
    op = Operator(namespace, operator_kubeconfig).start()
    try:
        yield op
    finally:
        op.stop()
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)


@pytest.fixture(scope="session")
def model_server() -> Iterator[dict[str, ServedModel]]:
    """The real model files of the PyPI packages, over HTTP on 127.0.0.1."""
    with serve_models() as served:
        yield served


@pytest.fixture(autouse=True)
def capture_statuses(request: pytest.FixtureRequest) -> Iterator[None]:
    """With VOICE_TEST_CAPTURE_DIR set, keep every ModelAsset and VoiceAgent a test leaves
    behind (spec + status as the apiserver stored them): real statuses for the Argo CD
    health-check tests."""
    target = os.environ.get("VOICE_TEST_CAPTURE_DIR")
    # Asked for now, so the namespace is torn down after this fixture reads it.
    namespace = (
        request.getfixturevalue("namespace")
        if target and "namespace" in request.fixturenames
        else None
    )
    yield
    if not target or namespace is None:
        return
    kube = request.getfixturevalue("kube")
    folder = Path(target)
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("ModelAsset", "VoiceAgent"):
        for obj in kube.list(kind, namespace):
            meta = obj["metadata"]
            kept = {
                "apiVersion": obj["apiVersion"],
                "kind": kind,
                "metadata": {"name": meta["name"], "generation": meta.get("generation")},
                "spec": obj.get("spec"),
                "status": obj.get("status"),
            }
            name = f"{request.node.name}--{kind.lower()}-{meta['name']}.json"
            (folder / name).write_text(json.dumps(kept, indent=2, sort_keys=True))
