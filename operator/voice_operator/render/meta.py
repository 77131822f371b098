"""Names, labels and owner references shared by every child object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voice_operator import API_VERSION, FIELD_MANAGER
from voice_operator.settings import OperatorSettings

PART_OF = "voice-operator"
LABEL_ASSET = "voiceops.dev/asset"
LABEL_VERSION = "voiceops.dev/version"
LABEL_AGENT = "voiceops.dev/agent"
LABEL_MODEL_VERSION = "voiceops.dev/model-version"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_REVISION = "voiceops.dev/revision"
ANNOTATION_SPEC_HASH = "voiceops.dev/spec-hash"
# The versions a prune Job deletes, comma-separated.
ANNOTATION_PRUNE = "voiceops.dev/prune"

MANAGED = {LABEL_MANAGED_BY: FIELD_MANAGER}


@dataclass(frozen=True)
class Owner:
    """The custom resource that owns a child."""

    kind: str
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Owned:
    """A custom resource seen by the builders: who owns the children, and where."""

    owner: Owner

    @property
    def name(self) -> str:
        return self.owner.name

    @property
    def namespace(self) -> str:
        return self.owner.namespace


PROMETHEUS_SCRAPE = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": "8080",
    "prometheus.io/path": "/metrics",
}


def labels(name: str, instance: str, component: str, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        LABEL_COMPONENT: component,
        "app.kubernetes.io/part-of": PART_OF,
        **MANAGED,
        **extra,
    }


def pod_values(settings: OperatorSettings) -> dict[str, Any]:
    """What every pod the operator creates shares: pull policy, the restricted security
    contexts, and the placement the operator was configured with."""
    return {
        "image_pull_policy": settings.image_pull_policy,
        "pod_security_context": restricted_pod_security(),
        "container_security_context": restricted_container_security(),
        "node_selector": settings.engine_node_selector,
        "tolerations": settings.engine_tolerations,
        # None, not []: the apiserver drops an empty list, and a field the live object lacks
        # would make every apply look like a change (kube.covers skips None).
        "image_pull_secrets": [{"name": name} for name in settings.image_pull_secrets] or None,
    }


def restricted_pod_security() -> dict[str, Any]:
    """Pod securityContext meeting the `restricted` Pod Security Standard."""
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
