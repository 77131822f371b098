"""Node-tier fixtures: the real kubelet node beside kwok's (containerd, runc, the CNI
bridge, kube-proxy and CoreDNS; see tests/testground/node.py), started once per session,
and what the host's kernel settings were before it started."""

from __future__ import annotations

from pathlib import Path

import pytest
from testground import Cluster
from testground.node import KERNEL_TUNABLES, RealNode

# What the node must leave alone: forwarding is per network namespace, and kubelet's
# tunables land on stand-ins in the node's mount namespace.
HOST_SETTINGS = ("net/ipv4/ip_forward", *KERNEL_TUNABLES)


def host_settings() -> dict[str, str]:
    return {name: (Path("/proc/sys") / name).read_text().strip() for name in HOST_SETTINGS}


@pytest.fixture(scope="session")
def host_settings_before_the_node() -> dict[str, str]:
    return host_settings()


@pytest.fixture(scope="session")
def real_node(
    cluster: Cluster,
    host_settings_before_the_node: dict[str, str],  # noqa: ARG001 (read before the node starts)
) -> RealNode:
    """The started real node; its pause and smoke images are loaded (`smoke_image`)."""
    if not cluster.local:
        pytest.skip("the real node runs beside the test ground's own control plane only")
    return cluster.real_node()
