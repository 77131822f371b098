"""Conditions the Kubernetes way, set by one helper, and the Events their transitions make."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from voice_operator.api.common import Condition, ConditionStatus


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str
    # What the Event reports, for the operator's metrics: "Ready=True" for a condition's
    # transition, the stage for a rollout step.
    transition: str = ""
    component: str = ""


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime.datetime,
) -> list[Condition]:
    """A new list with `type_` set; lastTransitionTime moves only when the status changes."""
    old = next((c for c in conditions if c.type == type_), None)
    changed = old is None or old.status != status
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=now if changed or old is None else old.last_transition_time,
    )
    return [new if c.type == type_ else c for c in conditions] if old else [*conditions, new]


def condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


# Conditions whose True is bad news: their transitions to True are Warning events.
_WARNING_WHEN_TRUE = {"Failed", "Degraded", "RolledBack"}


def transition_events(before: list[Condition], after: list[Condition]) -> list[EventSpec]:
    """One Event per condition whose status or reason changed."""
    events = []
    for new in after:
        old = condition(before, new.type)
        if old is not None and (old.status, old.reason) == (new.status, new.reason):
            continue
        if old is None and new.status != "True":
            continue  # a fresh object starting out not-ready is no news
        warning = new.type in _WARNING_WHEN_TRUE and new.status == "True"
        events.append(
            EventSpec(
                "Warning" if warning else "Normal",
                new.reason,
                f"{new.type}={new.status}: {new.message}",
                transition=f"{new.type}={new.status}",
            )
        )
    return events
