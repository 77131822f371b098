"""Floor (b) of benchmarks/scale.py: the least a kopf operator does for a VoiceAgent, one
ConfigMap per agent, with kopf's defaults (its progress annotation on the agent, an Event
per handler). Run by the benchmark as `kopf run --standalone` in a process of its own.

    kopf run --standalone --namespace NS benchmarks/_kopf_floor.py
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

core: client.CoreV1Api | None = None


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    global core
    settings.scanning.disabled = True  # the chart-like identity may not list CRDs
    core = client.CoreV1Api(config.new_client_from_config())


@kopf.on.create("voiceops.dev", "v1alpha1", "voiceagents")
def create_config_map(name: str, namespace: str, uid: str, **_: Any) -> None:
    assert core is not None
    body = {
        "metadata": {
            "name": f"{name}-floor",
            "ownerReferences": [
                {
                    "apiVersion": "voiceops.dev/v1alpha1",
                    "kind": "VoiceAgent",
                    "name": name,
                    "uid": uid,
                }
            ],
        },
        "data": {"agent": name},
    }
    try:
        core.create_namespaced_config_map(namespace, body)
    except ApiException as e:
        if e.status != 409:  # made before a restart: already there
            raise
