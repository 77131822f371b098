"""The only module that talks to the Kubernetes API: server-side apply with our one field
manager, reads, deletes, status patches and Events.

The operator touches a fixed set of kinds, so paths come from a static table rather than
API discovery (which would need a writable cache folder and a round trip at start-up).
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config

from voice_operator import API_VERSION, FIELD_MANAGER
from voice_operator.cache import SERVED, Caches
from voice_operator.hashing import short_hash
from voice_operator.metrics import APPLIES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


RESOURCES = {
    r.kind: r
    for r in (
        Resource("v1", "ConfigMap", "configmaps"),
        Resource("v1", "Event", "events"),
        Resource("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        Resource("v1", "Pod", "pods"),
        Resource("v1", "Secret", "secrets"),
        Resource("v1", "Service", "services"),
        Resource("v1", "ServiceAccount", "serviceaccounts"),
        Resource("apps/v1", "Deployment", "deployments"),
        Resource("batch/v1", "Job", "jobs"),
        Resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        Resource("rbac.authorization.k8s.io/v1", "Role", "roles"),
        Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
        Resource(API_VERSION, "ModelAsset", "modelassets"),
        Resource(API_VERSION, "VoiceAgent", "voiceagents"),
    )
}


class KubeError(RuntimeError):
    """An API call failed; `status` is the HTTP status, `reason` the API's own reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


def load_api_client() -> client.ApiClient:
    """In-cluster credentials in a pod, else $KUBECONFIG / ~/.kube/config."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    # Read $KUBECONFIG now, not when the kubernetes package was imported.
    return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


# The hash of what the operator last applied to an object: equal, and the object still
# holds every field of it, means there is nothing to write.
ANNOTATION_INTENT = "voiceops.dev/applied"


def covers(live: Any, desired: Any) -> bool:
    """Whether `live` holds every field of `desired` with its value (the apiserver adds
    defaults and status, which do not count; lists must match item by item)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            v is None or (k in live and covers(live[k], v)) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(covers(a, b) for a, b in zip(live, desired, strict=True))
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(live) == float(desired)
    return bool(live == desired)


def with_intent(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` carrying the hash of itself in ANNOTATION_INTENT."""
    out = copy.deepcopy(obj)
    annotations = out["metadata"].setdefault("annotations", {}) or {}
    annotations.pop(ANNOTATION_INTENT, None)
    out["metadata"]["annotations"] = {**annotations, ANNOTATION_INTENT: short_hash(out, 16)}
    return out


class Kube:
    """Thread-safe: the operator calls it from worker threads. With caches, reads of the
    kinds they hold come from memory, and an apply that would change nothing is skipped."""

    def __init__(
        self, api_client: client.ApiClient | None = None, cache: Caches | None = None
    ) -> None:
        self.api = api_client or load_api_client()
        self.cache = cache
        self.applied = 0
        self.unchanged = 0

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        method, url, headers, body, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(
            method, url, header_params=headers, body=body, _request_timeout=30
        )
        data = response.read() or b"{}"
        decoded = json.loads(data)
        if not 200 <= response.status < 300:
            raise KubeError(
                response.status,
                decoded.get("reason", ""),
                decoded.get("message", data.decode(errors="replace")),
            )
        return decoded

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        if self.cache and namespace and kind in SERVED:
            return self.cache.get(kind, name, namespace)
        return self.read(kind, name, namespace)

    def read(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """A GET from the apiserver, whatever the caches hold."""
        try:
            return self._call("GET", RESOURCES[kind].path(namespace, name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict]:
        if self.cache and namespace and kind in SERVED:
            return self.cache.list(kind, namespace, labels)
        query = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items())))
        result = self._call("GET", RESOURCES[kind].path(namespace), query=query)
        kind_version = RESOURCES[kind].api_version
        items = result.get("items", [])
        for item in items:  # list responses leave these out of each item
            item.setdefault("apiVersion", kind_version)
            item.setdefault("kind", kind)
        return items

    def apply(self, obj: dict) -> dict:
        """Server-side apply: we own the fields we set and nothing else. Skipped when the
        object already is what we applied last and still holds it."""
        obj = with_intent(obj)
        kind, meta = obj["kind"], obj["metadata"]
        live = self.get(kind, meta["name"], meta.get("namespace"))
        if (
            live is not None
            and (live["metadata"].get("annotations") or {}).get(ANNOTATION_INTENT)
            == meta["annotations"][ANNOTATION_INTENT]
            and covers(live, obj)
        ):
            self.unchanged += 1
            APPLIES.labels(kind, "unchanged").inc()
            return live
        self.applied += 1
        APPLIES.labels(kind, "written").inc()
        path = RESOURCES[kind].path(meta.get("namespace"), meta["name"])
        result: dict = self._call(
            "PATCH",
            path,
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        if self.cache is not None and kind in SERVED:
            result.setdefault("kind", kind)
            self.cache.remember(result)
        return result

    def delete(
        self, kind: str, name: str, namespace: str | None = None, propagation: str = "Background"
    ) -> bool:
        """True when something was deleted; a missing object is not an error."""
        try:
            self._call(
                "DELETE",
                RESOURCES[kind].path(namespace, name),
                body={"propagationPolicy": propagation},
            )
            return True
        except KubeError as e:
            if e.status == 404:
                return False
            raise

    def patch(self, kind: str, name: str, namespace: str, patch: dict) -> dict | None:
        """A JSON merge patch of the object itself (None if it is gone); a resourceVersion
        in the patch makes it fail with 409 if the object changed meanwhile."""
        return self._merge_patch(RESOURCES[kind].path(namespace, name), patch)

    def patch_status(self, kind: str, name: str, namespace: str, patch: dict) -> dict | None:
        """A JSON merge patch of the status subresource (None if the object is gone)."""
        return self._merge_patch(RESOURCES[kind].path(namespace, name, "status"), patch)

    def _merge_patch(self, path: str, patch: dict) -> dict | None:
        try:
            result: dict = self._call(
                "PATCH",
                path,
                body=patch,
                query=[("fieldManager", FIELD_MANAGER)],
                content_type="application/merge-patch+json",
            )
            return result
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def event(self, regarding: dict, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about `regarding` (shown by kubectl describe)."""
        meta = regarding["metadata"]
        now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": regarding["apiVersion"],
                "kind": regarding["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": os.environ.get("HOSTNAME", FIELD_MANAGER),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._call(
                "POST",
                RESOURCES["Event"].path(meta["namespace"]),
                body=body,
                query=[("fieldManager", FIELD_MANAGER)],
            )
        except KubeError as e:  # an Event is worth less than the reconcile that made it
            log.warning("could not record event %s on %s: %s", reason, meta["name"], e)
