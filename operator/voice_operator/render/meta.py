"""Names, labels and owner references shared by every child object."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from voice_operator import API_VERSION, FIELD_MANAGER

PART_OF = "voice-operator"
LABEL_ASSET = "voiceops.dev/asset"
LABEL_VERSION = "voiceops.dev/version"
LABEL_AGENT = "voiceops.dev/agent"
LABEL_MODEL_VERSION = "voiceops.dev/model-version"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_REVISION = "voiceops.dev/revision"
ANNOTATION_CONFIG_HASH = "voiceops.dev/config-hash"
ANNOTATION_SPEC_HASH = "voiceops.dev/spec-hash"

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


def labels(name: str, instance: str, component: str, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        LABEL_COMPONENT: component,
        "app.kubernetes.io/part-of": PART_OF,
        **MANAGED,
        **extra,
    }


def canonical(value: Any) -> Any:
    """The value as the apiserver will give it back."""
    # The apiserver stores 1.0 as 1: a value read back from status must hash the same.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def short_hash(value: Any, length: int = 10) -> str:
    """A stable hash of any JSON-able value (key order and 1 vs 1.0 do not matter)."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


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
