"""The kopf handlers. Each one only turns a watch event into work-queue keys (see
workqueue.py for why); the reconcilers do the rest. kopf watches our two resources; the
children and Secrets are watched by the caches (cache.py), filtered by the apiserver."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes import client

from voice_operator import GROUP, VERSION
from voice_operator.cache import Caches
from voice_operator.controllers.modelasset import reconcile_model_asset
from voice_operator.controllers.probes import ProbeRunner
from voice_operator.controllers.voiceagent import reconcile_voice_agent
from voice_operator.kube import Kube
from voice_operator.metrics import RECONCILE_DURATION, RECONCILE_ERRORS, RECONCILES
from voice_operator.observe import references
from voice_operator.peering import PeeringGate
from voice_operator.plan.usage import assets_of
from voice_operator.render.meta import LABEL_AGENT, LABEL_ASSET
from voice_operator.settings import OperatorSettings
from voice_operator.workqueue import Key, WorkQueue

log = logging.getLogger(__name__)
# Children whose changes wake the agent named in their labels.
_AGENT_CHILDREN = frozenset({"Deployment", "Service", "ConfigMap", "Pod"})


class Runtime:
    """What the handlers share: settings, the API client and its caches, the queue and the
    known keys."""

    def __init__(
        self, settings: OperatorSettings, kube: Kube, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.loop = loop
        self.queue = WorkQueue(self.reconcile, workers=settings.workers)
        self.known: set[Key] = set()
        self.probes = ProbeRunner(wake=self.queue.add)
        self.probes.bind(loop)
        self.tasks: list[asyncio.Task[None]] = []
        self.in_flight: set[asyncio.Future[float | None]] = set()
        # kopf's live view of agents_by_reference, kept from the first handler given it:
        # the caches' threads wake agents through it too.
        self.references: kopf.Index[Any, Key] | None = None
        # With peers: reconciles wait while one outranks this replica (peering.py).
        self.gate: PeeringGate | None = None

    def child_changed(self, kind: str, namespace: str, obj: dict[str, Any]) -> None:
        """A cached object changed (called from its cache's thread): wake its owner."""
        labels = obj.get("metadata", {}).get("labels") or {}
        name = obj.get("metadata", {}).get("name", "")
        if kind == "Secret":
            self.loop.call_soon_threadsafe(self._wake_secret_users, namespace, name)
        elif kind == "Job" and (asset := labels.get(LABEL_ASSET)):
            self.loop.call_soon_threadsafe(self.queue.add, Key("ModelAsset", namespace, asset))
        elif kind in _AGENT_CHILDREN and (agent := labels.get(LABEL_AGENT)):
            self.loop.call_soon_threadsafe(self.queue.add, Key("VoiceAgent", namespace, agent))

    def _wake_secret_users(self, namespace: str, name: str) -> None:
        if self.references is not None:
            self.wake_referrers(self.references, ("Secret", namespace, name))

    async def reconcile(self, key: Key) -> float | None:
        if self.gate is not None:
            await self.gate.wait_open()
        reconciler: Callable[[Kube, OperatorSettings, Key], float | None] = (
            reconcile_model_asset
            if key.kind == "ModelAsset"
            else functools.partial(reconcile_voice_agent, probes=self.probes)
        )
        with RECONCILE_DURATION.labels(key.kind).time():
            RECONCILES.labels(key.kind).inc()
            try:
                # The Kubernetes client is synchronous; keep it off the event loop. The
                # thread can't be cancelled, so stop() waits for it (see in_flight).
                future = asyncio.get_running_loop().run_in_executor(
                    None, reconciler, self.kube, self.settings, key
                )
                self.in_flight.add(future)
                future.add_done_callback(self.in_flight.discard)
                return await future
            except Exception:
                RECONCILE_ERRORS.labels(key.kind).inc()
                raise

    def wake_referrers(self, index: kopf.Index[Any, Key], ref: tuple[str, str, str]) -> None:
        for agent in index.get(ref, ()):
            self.queue.add(agent)

    def enqueue(self, key: Key, deleted: bool = False) -> None:
        if deleted:
            self.known.discard(key)
        else:
            self.known.add(key)
        self.queue.add(key)

    async def resync(self) -> None:
        """A safety net for missed events: every known object, every resync period."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            for key in list(self.known):
                self.queue.add(key, resync=True)


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo["runtime"]
    return runtime


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own readers: the pod's service account, else $KUBECONFIG as it is now.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    # Nothing of kopf's own bookkeeping is written to our objects: we use no change-
    # detection handlers, so there is no progress or diff-base state to store.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Our resources and namespaces are known at start: no need to list/watch every CRD and
    # namespace (least privilege; the chart grants neither).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.error_backoffs = [1, 2, 5, 10, 30, 60]
    settings.posting.level = logging.WARNING
    # One line per watch event ("Handler ... succeeded") would drown what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kube = await asyncio.to_thread(Kube)
    runtime = Runtime(OperatorSettings(), kube, asyncio.get_running_loop())
    # The caches get their own connection pool: their watches hold connections open.
    kube.cache = Caches(client.ApiClient(kube.api.configuration), runtime.child_changed)
    runtime.tasks = [
        asyncio.create_task(runtime.queue.run(), name="work-queue"),
        asyncio.create_task(runtime.resync(), name="resync"),
    ]
    if (peering := memo.get("peering")) is not None:
        runtime.gate = PeeringGate(
            peering, client.ApiClient(kube.api.configuration), asyncio.get_running_loop()
        )
        runtime.tasks.append(asyncio.create_task(runtime.gate.run(), name="peering-gate"))
    memo["runtime"] = runtime


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    runtime = memo.get("runtime")
    if runtime:
        for task in runtime.tasks:
            task.cancel()
        await asyncio.gather(*runtime.tasks, return_exceptions=True)
        await runtime.probes.stop()
        if runtime.kube.cache is not None:
            runtime.kube.cache.stop()
        # A reconcile half done in its thread finishes before the operator exits, so a
        # stop never leaves writes landing after it (they are idempotent either way).
        if runtime.in_flight:
            await asyncio.wait(runtime.in_flight, timeout=30)


def _deleted(event: kopf.RawEvent) -> bool:
    return event.get("type") == "DELETED"


@kopf.index(GROUP, VERSION, "voiceagents")
def agents_by_reference(
    namespace: str | None, name: str | None, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str, str], Key]:
    """(kind, namespace, name) of each ModelAsset and Secret an agent names -> the agent."""
    if not (namespace and name):
        return {}
    agent = Key("VoiceAgent", namespace, name)
    assets, secrets = references(dict(spec))
    refs = [("ModelAsset", a) for a in assets] + [("Secret", s) for s in secrets]
    return {(kind, namespace, ref): agent for kind, ref in refs}


def _references(kwargs: dict[str, Any]) -> kopf.Index[Any, Key]:
    # kopf passes each index to every handler as a keyword named after the index.
    index: kopf.Index[Any, Key] = kwargs["agents_by_reference"]
    return index


@kopf.on.event(GROUP, VERSION, "modelassets")
def model_asset_event(
    event: kopf.RawEvent,
    namespace: str | None,
    name: str | None,
    memo: Any,
    **kwargs: Any,
) -> None:
    if not (namespace and name):
        return
    runtime = _runtime(memo)
    runtime.references = _references(kwargs)
    runtime.enqueue(Key("ModelAsset", namespace, name), deleted=_deleted(event))
    # Agents wait for their assets: wake the ones naming this asset.
    runtime.wake_referrers(runtime.references, ("ModelAsset", namespace, name))


@kopf.on.event(GROUP, VERSION, "voiceagents")
def voice_agent_event(
    event: kopf.RawEvent,
    namespace: str | None,
    name: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: Any,
    **kwargs: Any,
) -> None:
    if not (namespace and name):
        return
    runtime = _runtime(memo)
    runtime.references = _references(kwargs)
    key = Key("VoiceAgent", namespace, name)
    runtime.enqueue(key, deleted=_deleted(event))
    # What an agent uses decides which asset versions may be pruned and whether the asset
    # may go: wake the ones it names and the ones its status still holds.
    for asset in assets_of({"spec": dict(spec), "status": dict(status)}):
        runtime.queue.add(Key("ModelAsset", namespace, asset))
