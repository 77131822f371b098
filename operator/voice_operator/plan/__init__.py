"""Pure planning: (validated spec, observed objects) -> what to apply, delete and report.
Handlers only execute plans; plans are tested as tables, without a cluster."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from voice_operator.api.common import Condition
from voice_operator.conditions import EventSpec, set_condition, transition_events


@dataclass(frozen=True)
class ProbeRequest:
    """An HTTP check the plan wants run; its result is seen by a later reconcile."""

    stage: str
    revision: str
    url: str
    timeout_seconds: float
    after_seconds: float = 0.0  # wait this long first (a retry after a failed attempt)


@dataclass
class Plan:
    apply: list[dict[str, Any]] = field(default_factory=list)  # in this order
    delete: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    status_patch: dict[str, Any] | None = None  # merge patch of .status, None = unchanged
    events: list[EventSpec] = field(default_factory=list)
    requeue_after: float | None = None
    probes: list[ProbeRequest] = field(default_factory=list)
    # Merge patch of the object itself (its finalizers), None = unchanged.
    metadata_patch: dict[str, Any] | None = None
    # Why the plan is what it is, one line each: logged by the executor.
    reasons: list[str] = field(default_factory=list)

    def requeue(self, seconds: float) -> None:
        self.requeue_after = (
            seconds if self.requeue_after is None else min(self.requeue_after, seconds)
        )


def field_errors(error: ValidationError, prefix: str = "spec") -> str:
    """pydantic's errors as `spec.files[1].path: message; ...` (the fields the user wrote)."""
    parts = []
    for e in error.errors():
        path = prefix
        for loc in e["loc"]:
            path += f"[{loc}]" if isinstance(loc, int) else f".{loc}"
        message = e["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {message}")
    return "; ".join(parts)


def status_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch (RFC 7386) turning .status `before` into `after`, or None."""
    patch = _merge_diff(before, after)
    return {"status": patch} if patch else None


def _merge_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    # A merge patch merges nested objects, so a field cleared deep inside (a stage's
    # `draining`) must be sent as null at its own level, or the apiserver keeps it.
    patch: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if nested := _merge_diff(old, value):
                patch[key] = nested
        elif old != value:
            patch[key] = value
    patch.update({k: None for k in before if k not in after})
    return patch


def apply_failure(
    status: dict[str, Any],
    generation: int | None,
    child: str,
    message: str,
    now: datetime.datetime,
) -> tuple[dict[str, Any] | None, list[EventSpec]]:
    """The status patch and Events when the apiserver refused a child: Degraded, with the
    child and the apiserver's own words; what serves keeps serving, so Ready is left as is.
    An Event only when the condition changes, not at every retry."""
    before = [Condition.model_validate(c) for c in status.get("conditions") or []]
    after = set_condition(
        before, "Degraded", "True", "ApplyFailed", f"{child}: {message}", generation, now
    )
    wire = [c.wire() for c in after]
    # This generation was seen, and found impossible to apply: that is its status.
    patch = status_patch(
        {
            "conditions": status.get("conditions") or [],
            "observedGeneration": status.get("observedGeneration"),
        },
        {"conditions": wire, "observedGeneration": generation},
    )
    events = transition_events(before, after)
    if not events and patch:
        # Same reason, another message (another child or apiserver answer): worth an Event.
        events = [EventSpec("Warning", "ApplyFailed", f"{child}: {message}")]
    return patch, events
