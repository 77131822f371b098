"""Carrying out a plan: the one place where decisions become API calls."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from voice_operator.kube import Kube, KubeError
from voice_operator.metrics import count_events
from voice_operator.plan import Plan, apply_failure
from voice_operator.workqueue import Retry

log = logging.getLogger(__name__)


def execute(kube: Kube, plan: Plan, owner: dict[str, Any]) -> None:
    """Apply in order, delete, then write status and record Events.

    Status goes last: it reports what was done, so a crash before it only repeats work
    that is idempotent anyway. A child the apiserver refuses stops the plan there: the
    owner turns Degraded naming the child and the apiserver's reason, and the reconcile is
    retried with backoff (Retry).
    """
    namespace = owner["metadata"]["namespace"]
    kind, name = owner["kind"], owner["metadata"]["name"]
    # Why: at INFO when the plan changes something, else only for debugging.
    level = logging.INFO if plan.status_patch or plan.delete or plan.events else logging.DEBUG
    for reason in plan.reasons:
        log.log(level, "%s/%s/%s: %s", kind, namespace, name, reason)
    if plan.metadata_patch:
        try:
            kube.patch(kind, name, namespace, plan.metadata_patch)
        except KubeError as e:
            if e.status != 409:
                _apply_failed(kube, owner, {"kind": kind, "metadata": {"name": name}}, e)
            # Changed since it was read (its finalizers guarded by resourceVersion).
            raise Retry(f"{kind} {name} changed while its finalizers were updated") from None
    for obj in plan.apply:
        try:
            kube.apply(obj)
        except KubeError as e:
            if _namespace_going(e):
                log.info("%s/%s/%s: its namespace is being deleted", kind, namespace, name)
                return
            _apply_failed(kube, owner, obj, e)
    for child_kind, child_name in plan.delete:
        if kube.delete(child_kind, child_name, namespace):
            log.info("deleted %s/%s of %s/%s", child_kind, child_name, kind, name)
    if plan.status_patch:
        kube.patch_status(kind, name, namespace, plan.status_patch)
    for event in plan.events:
        kube.event(owner, event.type, event.reason, event.message)
    count_events(kind, plan.events)


def _namespace_going(error: KubeError) -> bool:
    return error.status == 403 and "being terminated" in str(error)


def _apply_failed(
    kube: Kube, owner: dict[str, Any], child: dict[str, Any], error: KubeError
) -> None:
    meta = owner["metadata"]
    what = f"{child['kind']} {child['metadata']['name']}"
    patch, events = apply_failure(
        owner.get("status") or {},
        meta.get("generation"),
        what,
        str(error),
        datetime.datetime.now(datetime.UTC).replace(microsecond=0),
    )
    if patch:
        kube.patch_status(owner["kind"], meta["name"], meta["namespace"], patch)
    for event in events:
        kube.event(owner, event.type, event.reason, event.message)
    count_events(owner["kind"], events)
    raise Retry(f"applying {what} failed: {error}")
