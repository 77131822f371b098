"""Carrying out a plan: the one place where decisions become API calls."""

from __future__ import annotations

import logging
from typing import Any

from voice_operator.kube import Kube
from voice_operator.metrics import count_events
from voice_operator.plan import Plan

log = logging.getLogger(__name__)


def execute(kube: Kube, plan: Plan, owner: dict[str, Any]) -> None:
    """Apply in order, delete, then write status and record Events.

    Status goes last: it reports what was done, so a crash before it only repeats work
    that is idempotent anyway.
    """
    namespace = owner["metadata"]["namespace"]
    kind, name = owner["kind"], owner["metadata"]["name"]
    # Why: at INFO when the plan changes something, else only for debugging.
    level = logging.INFO if plan.status_patch or plan.delete or plan.events else logging.DEBUG
    for reason in plan.reasons:
        log.log(level, "%s/%s/%s: %s", kind, namespace, name, reason)
    for obj in plan.apply:
        kube.apply(obj)
    for child_kind, child_name in plan.delete:
        if kube.delete(child_kind, child_name, namespace):
            log.info("deleted %s/%s of %s/%s", child_kind, child_name, kind, name)
    if plan.status_patch:
        kube.patch_status(kind, name, namespace, plan.status_patch)
    for event in plan.events:
        kube.event(owner, event.type, event.reason, event.message)
    count_events(kind, plan.events)
