"""Whether this replica may work now.

kopf pauses its own watch streams while a live peer of higher or equal priority stands in
the peering object (another replica, or `kopf freeze`), but the operator's work queue and
its resync run on their own and would go on writing. They wait on this gate, which applies
kopf's rule to the same peering objects, watched through a cache like the children."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from voice_operator.cache import Informer, Watched

log = logging.getLogger(__name__)

PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"
# kopf's default for a peer that writes no lifetime of its own.
DEFAULT_LIFETIME = 60
# How often the gate looks again without news: a peer's entry expires by the clock.
EVALUATE_SECONDS = 1.0


@dataclass(frozen=True)
class PeeringConfig:
    name: str  # the peering object's name
    identity: str  # this replica's key in it, as given to kopf.run
    priority: int
    namespaces: tuple[str, ...]  # where kopf keeps KopfPeerings; empty: cluster-wide


def blocking_peers(
    status: dict[str, Any], identity: str, priority: int, now: datetime.datetime
) -> list[str]:
    """The live peers that pause a replica of this identity and priority: kopf's rule
    (its peering.process_peering_event), where equal priorities pause everyone."""
    blockers = []
    for peer, info in (status or {}).items():
        if peer == identity or not isinstance(info, dict):
            continue
        seen = info.get("lastseen")
        try:
            lastseen = datetime.datetime.fromisoformat(seen) if seen else now
            lifetime = int(info.get("lifetime", DEFAULT_LIFETIME))
            other = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue  # an entry kopf could not read either
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=datetime.UTC)
        if lastseen + datetime.timedelta(seconds=lifetime) > now and other >= priority:
            blockers.append(peer)
    return sorted(blockers)


def _peering_lister(api: client.ApiClient) -> Callable[..., Any]:
    objects = client.CustomObjectsApi(api)

    def list_peerings(namespace: str, **kwargs: Any) -> Any:
        if namespace:
            return objects.list_namespaced_custom_object(
                PEERING_GROUP, PEERING_VERSION, namespace, "kopfpeerings", **kwargs
            )
        return objects.list_cluster_custom_object(
            PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings", **kwargs
        )

    return list_peerings


class PeeringGate:
    """Open while no live peer outranks this replica in any of its peering objects."""

    def __init__(
        self, config: PeeringConfig, api: client.ApiClient, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.config = config
        self._loop = loop
        self._open = asyncio.Event()
        self._blockers: list[str] = []
        kind = "KopfPeering" if config.namespaces else "ClusterKopfPeering"
        watched = Watched(
            kind, f"{PEERING_GROUP}/{PEERING_VERSION}", _peering_lister, selector=None
        )
        self._informers = [
            Informer(api, watched, namespace, self._changed)
            for namespace in (config.namespaces or ("",))
        ]

    def _changed(self, _kind: str, _namespace: str, _obj: dict[str, Any]) -> None:
        self._loop.call_soon_threadsafe(self.evaluate)

    def evaluate(self, now: datetime.datetime | None = None) -> None:
        now = now or datetime.datetime.now(datetime.UTC)
        if not all(i.synced.is_set() for i in self._informers):
            return  # closed until the peers are known
        blockers = sorted(
            {
                peer
                for informer in self._informers
                for obj in informer.items()
                if obj["metadata"]["name"] == self.config.name
                for peer in blocking_peers(
                    obj.get("status") or {}, self.config.identity, self.config.priority, now
                )
            }
        )
        if blockers and self._open.is_set():
            log.info("paused: the peers %s outrank this replica", ", ".join(blockers))
            self._open.clear()
        elif not blockers and not self._open.is_set():
            log.info("working: no live peer outranks this replica")
            self._open.set()
        self._blockers = blockers

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait_open(self) -> None:
        await self._open.wait()

    async def run(self) -> None:
        """Watch the peering objects and look again every second until cancelled."""
        for informer in self._informers:
            informer.start()
        try:
            while True:
                self.evaluate()
                await asyncio.sleep(EVALUATE_SECONDS)
        finally:
            for informer in self._informers:
                informer.stop()
