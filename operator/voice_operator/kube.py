"""The only module that talks to the Kubernetes API: server-side apply with our one field
manager, reads, deletes, status patches and Events.

The operator touches a fixed set of kinds, so paths come from a static table rather than
API discovery (which would need a writable cache folder and a round trip at start-up).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config

from voice_operator import API_VERSION, FIELD_MANAGER

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


class Kube:
    """Thread-safe: the operator calls it from worker threads."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api = api_client or load_api_client()

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
        try:
            return self._call("GET", RESOURCES[kind].path(namespace, name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict]:
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
        """Server-side apply: we own the fields we set and nothing else."""
        kind, meta = obj["kind"], obj["metadata"]
        path = RESOURCES[kind].path(meta.get("namespace"), meta["name"])
        return self._call(
            "PATCH",
            path,
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

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

    def patch_status(self, kind: str, name: str, namespace: str, patch: dict) -> dict | None:
        """A JSON merge patch of the status subresource (None if the object is gone)."""
        try:
            return self._call(
                "PATCH",
                RESOURCES[kind].path(namespace, name, "status"),
                body=patch,
                content_type="application/merge-patch+json",
            )
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
            self._call("POST", RESOURCES["Event"].path(meta["namespace"]), body=body)
        except KubeError as e:  # an Event is worth less than the reconcile that made it
            log.warning("could not record event %s on %s: %s", reason, meta["name"], e)
