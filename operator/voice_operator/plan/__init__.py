"""Pure planning: (validated spec, observed objects) -> what to apply, delete and report.
Handlers only execute plans; plans are tested as tables, without a cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from voice_operator.conditions import EventSpec


@dataclass
class Plan:
    apply: list[dict[str, Any]] = field(default_factory=list)  # in this order
    delete: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    status_patch: dict[str, Any] | None = None  # merge patch of .status, None = unchanged
    events: list[EventSpec] = field(default_factory=list)
    requeue_after: float | None = None

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
    """A merge patch turning `before` into `after` at the top level of .status, or None."""
    patch: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v}
    patch.update({k: None for k in before if k not in after})
    return {"status": patch} if patch else None
