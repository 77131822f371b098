"""The examples the README shows are accepted by the real apiserver as they are."""

from __future__ import annotations

import pytest
from testground import Cluster
from testground.harness import REPO

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(
    "example",
    ["model-assets.yaml", "voice-agent.yaml", "voice-agent-hybrid.yaml", "hpa-engine.yaml"],
)
def test_example_is_accepted(cluster: Cluster, namespace: str, example: str):
    out = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        str(REPO / "examples" / example),
    ).stdout
    assert "serverside-applied (server dry run)" in out
