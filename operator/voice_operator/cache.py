"""Watch caches of what the reconciles read: one list and then a watch per kind and
namespace, filtered by the apiserver (our label selector), so a reconcile reads memory
instead of listing, and objects that are not ours never reach the operator.

Secrets are watched as metadata only (names, never data), just to wake the agents that
name one; a reconcile reads the few Secrets its agent names, for their key names.

Caches of a namespace start when the operator first reconciles something there (kopf
decides which namespaces are served), and a reconcile waits for their first list.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

from voice_contracts import GROUP, VERSION
from voice_operator import FIELD_MANAGER
from voice_operator.render.meta import LABEL_MANAGED_BY

log = logging.getLogger(__name__)

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={FIELD_MANAGER}"
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
WATCH_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
# A watch is renewed this often even without errors (the apiserver ends it anyway).
WATCH_SECONDS = 300
SYNC_TIMEOUT = 60.0

# (kind, namespace, the object as last seen, also when deleted); called from its thread.
OnChange = Callable[[str, str, dict[str, Any]], None]


@dataclass(frozen=True)
class Watched:
    kind: str
    api_version: str
    # (api client) -> the namespaced list function of the kind
    lister: Callable[[client.ApiClient], Callable[..., Any]]
    selector: str | None = MANAGED_SELECTOR
    metadata_only: bool = False
    # Served to reconciles (False: only wakes them).
    serves: bool = True

    def list_function(self, api: client.ApiClient) -> Callable[..., Any]:
        return self.lister(api)


def _custom(plural: str) -> Callable[[client.ApiClient], Callable[..., Any]]:
    def lister(api: client.ApiClient) -> Callable[..., Any]:
        objects = client.CustomObjectsApi(api)

        def list_namespaced(namespace: str, **kwargs: Any) -> Any:
            return objects.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, **kwargs
            )

        return list_namespaced

    return lister


WATCHED: tuple[Watched, ...] = (
    Watched("Deployment", "apps/v1", lambda a: client.AppsV1Api(a).list_namespaced_deployment),
    Watched("Service", "v1", lambda a: client.CoreV1Api(a).list_namespaced_service),
    Watched("ConfigMap", "v1", lambda a: client.CoreV1Api(a).list_namespaced_config_map),
    Watched("Pod", "v1", lambda a: client.CoreV1Api(a).list_namespaced_pod),
    Watched("Job", "batch/v1", lambda a: client.BatchV1Api(a).list_namespaced_job),
    # Users make the autoscalers of our Deployments: they carry no label of ours.
    Watched(
        "HorizontalPodAutoscaler",
        "autoscaling/v2",
        lambda a: client.AutoscalingV2Api(a).list_namespaced_horizontal_pod_autoscaler,
        selector=None,
    ),
    Watched("ModelAsset", f"{GROUP}/{VERSION}", _custom("modelassets"), selector=None),
    Watched("VoiceAgent", f"{GROUP}/{VERSION}", _custom("voiceagents"), selector=None),
    Watched(
        "Secret",
        "v1",
        lambda a: client.CoreV1Api(a).list_namespaced_secret,
        selector=None,
        metadata_only=True,
        serves=False,
    ),
)
SERVED = frozenset(w.kind for w in WATCHED if w.serves)


def _trim(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """What is kept of an object: all but its managedFields (often half its size), and of
    a Pod its metadata and status only (nothing reads a Pod's spec)."""
    obj.get("metadata", {}).pop("managedFields", None)
    if kind == "Pod":
        return {k: v for k, v in obj.items() if k in ("apiVersion", "kind", "metadata", "status")}
    return obj


class Informer:
    """One kind in one namespace: list, then watch from the list's resourceVersion, again
    after every error (410 Gone lists again)."""

    def __init__(
        self, api: client.ApiClient, watched: Watched, namespace: str, on_change: OnChange
    ) -> None:
        self.watched = watched
        self.namespace = namespace
        self.on_change = on_change
        self.store: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self._list = watched.list_function(api)
        self._response: Any = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"cache {watched.kind} {namespace}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        # Unblocks a read waiting on the watch's connection, so the thread ends now. A
        # shutdown of the socket, not close(): closing waits for the reading thread.
        connection = getattr(self._response, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.store.values())

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self.store.get(name)

    def remember(self, obj: dict[str, Any]) -> None:
        """An object as a write returned it, unless the watch already has a newer one."""
        name = obj["metadata"]["name"]
        with self._lock:
            known = self.store.get(name)
            if known is None or _newer(obj, known):
                self.store[name] = _trim(self.watched.kind, copy.deepcopy(obj))

    def _kwargs(self, accept: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.watched.selector:
            kwargs["label_selector"] = self.watched.selector
        if self.watched.metadata_only:
            kwargs["_headers"] = {"Accept": accept}
        return kwargs

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                self._follow(self._relist())
            except Exception as e:  # the cache must outlive any error: list again
                if self._stopped.is_set():
                    return
                # A watch that ran a while had recovered: its end starts the count again.
                failures = 1 if time.monotonic() - started > WATCH_SECONDS / 5 else failures + 1
                # Capped low: a relist is one request, and a cache left stale long after
                # the apiserver is back holds every reconcile of the namespace behind it.
                delay = min(5.0, 0.5 * 2 ** min(failures, 4))
                level = logging.INFO if _expected(e) else logging.WARNING
                log.log(
                    level,
                    "watch of %s in %s: %s; listing again in %.1fs",
                    self.watched.kind,
                    self.namespace,
                    _describe(e),
                    delay,
                )
                self._stopped.wait(delay)

    def _relist(self) -> str:
        response = self._list(self.namespace, _preload_content=False, **self._kwargs(METADATA_ONLY))
        body = json.loads(response.data)
        fresh = {}
        for item in body.get("items") or []:
            item.setdefault("apiVersion", self.watched.api_version)
            item.setdefault("kind", self.watched.kind)
            fresh[item["metadata"]["name"]] = _trim(self.watched.kind, item)
        with self._lock:
            gone = [self.store[n] for n in self.store if n not in fresh]
            changed = [
                o
                for n, o in fresh.items()
                if (self.store.get(n) or {}).get("metadata", {}).get("resourceVersion")
                != o["metadata"].get("resourceVersion")
            ]
            self.store = fresh
        self.synced.set()
        for obj in [*changed, *gone]:
            self.on_change(self.watched.kind, self.namespace, obj)
        version: str = body.get("metadata", {}).get("resourceVersion", "")
        return version

    def _follow(self, version: str) -> None:
        """Apply watch events until the watch ends; raises to list again."""
        while not self._stopped.is_set():
            response = self._list(
                self.namespace,
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
                **self._kwargs(WATCH_METADATA_ONLY),
            )
            self._response = response
            try:
                _check(response)
                for line in iter_resp_lines(response):
                    if line.strip():
                        version = self._apply_event(json.loads(line)) or version
            finally:
                self._response = None
                response.release_conn()

    def _apply_event(self, event: dict[str, Any]) -> str | None:
        """One watch event into the store; returns the resourceVersion it brings."""
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":  # 410 Gone: the version is too old, list again
            raise ApiException(status=obj.get("code", 500), reason=obj.get("reason"))
        version: str | None = obj.get("metadata", {}).get("resourceVersion")
        if kind == "BOOKMARK":
            return version
        obj.setdefault("apiVersion", self.watched.api_version)
        obj.setdefault("kind", self.watched.kind)
        name = obj["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self.store.pop(name, None)
            else:
                self.store[name] = _trim(self.watched.kind, obj)
        self.on_change(self.watched.kind, self.namespace, obj)
        return version


def _check(response: Any) -> None:
    """A list or watch answered with an error status is an error, not an empty list."""
    if not 200 <= response.status < 300:
        raise ApiException(status=response.status, reason=response.reason)


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether `a` is a later version of the object than `b`; resourceVersions are opaque,
    but etcd's are integers, and an unknown order counts as not newer."""
    va, vb = (o["metadata"].get("resourceVersion", "") for o in (a, b))
    return va.isdigit() and vb.isdigit() and int(va) > int(vb)


def _expected(error: BaseException) -> bool:
    """A watch that expired or a connection that was cut: routine, not a warning."""
    return (isinstance(error, ApiException) and error.status == 410) or isinstance(
        error, HTTPError | ConnectionError
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"API status {error.status} {error.reason or ''}".strip()
    return f"{type(error).__name__}: {error}"


class Caches:
    """The informers of every namespace the operator serves."""

    def __init__(self, api: client.ApiClient, on_change: OnChange) -> None:
        self.api = api
        self.on_change = on_change
        self._lock = threading.Lock()
        self._namespaces: dict[str, dict[str, Informer]] = {}

    def namespace(self, namespace: str) -> dict[str, Informer]:
        """The namespace's informers, started on first use; waits for their first list."""
        with self._lock:
            informers = self._namespaces.get(namespace)
            if informers is None:
                informers = {
                    w.kind: Informer(self.api, w, namespace, self.on_change) for w in WATCHED
                }
                for informer in informers.values():
                    informer.start()
                self._namespaces[namespace] = informers
        deadline = time.monotonic() + SYNC_TIMEOUT
        for informer in informers.values():
            if not informer.synced.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"the cache of {informer.watched.kind} in {namespace}")
        return informers

    def list(
        self, kind: str, namespace: str, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        items = self.namespace(namespace)[kind].items()
        if not labels:
            return items
        return [
            o
            for o in items
            if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
        ]

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        return self.namespace(namespace)[kind].get(name)

    def remember(self, obj: dict[str, Any]) -> None:
        namespace = obj["metadata"].get("namespace")
        with self._lock:
            informer = self._namespaces.get(namespace or "", {}).get(obj.get("kind", ""))
        if informer is not None:
            informer.remember(obj)

    def stop(self) -> None:
        with self._lock:
            for informers in self._namespaces.values():
                for informer in informers.values():
                    informer.stop()
