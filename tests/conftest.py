"""Fixtures shared by every tier. The cluster tier gets a real control plane per session
(see tests/testground) and a namespace per test."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config
from testground import Cluster, open_cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked after_the_tier judge what the whole run did: they go last."""
    items.sort(key=lambda item: item.get_closest_marker("after_the_tier") is not None)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The control plane. Failing to start it fails the tests that need it, loudly."""
    cluster = open_cluster()
    previous = os.environ.get("KUBECONFIG")
    # The operator under test and any client made in a test find the cluster the usual way.
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        cluster.close()


def api_client_for(cluster: Cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> client.ApiClient:
    return api_client_for(cluster)


@pytest.fixture
def namespace(
    request: pytest.FixtureRequest, cluster: Cluster, api: client.ApiClient
) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(api)
    # The restricted Pod Security Standard is enforced: a pod we render that breaks it is
    # refused by the real admission plugin, and the test waiting for it fails. Modules
    # whose own test pods are bare set POD_SECURITY.
    level = getattr(request.module, "POD_SECURITY", "restricted")
    labels = {"testground": "true", "pod-security.kubernetes.io/enforce": level}
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    # Pods can't be created before the controller-manager made the default ServiceAccount.
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
    yield name
    core.delete_namespace(name, propagation_policy="Background")
