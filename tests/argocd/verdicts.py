"""The verdict table of examples/argocd/README.md, as code: what Argo CD must show for a
status, written independently of the Lua so the two can be checked against each other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cond:
    status: str
    reason: str
    message: str

    def describe(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason


def not_observed(generation: int, observed: int | None) -> dict[str, str]:
    message = f"waiting for the operator to observe generation {generation}"
    if observed is not None:
        message += f" (status is for generation {observed})"
    return {"status": "Progressing", "message": message}


WAITING_FOR_READY = {"status": "Progressing", "message": "waiting for the operator to report Ready"}


def voiceagent(conditions: dict[str, Cond], serving: str = "") -> dict[str, str]:
    """The verdict for an observed VoiceAgent whose counted conditions are `conditions`."""
    ready = conditions.get("Ready")
    degraded = conditions.get("Degraded")
    rolled_back = conditions.get("RolledBack")
    progressing = conditions.get("Progressing")
    if _true(degraded) or _true(rolled_back):
        bad = degraded if _true(degraded) else rolled_back
        assert bad is not None
        message = bad.describe()
        if _true(ready):
            message += "; the agent still serves"
        return {"status": "Degraded", "message": message}
    if _true(progressing):
        assert progressing is not None
        return {"status": "Progressing", "message": progressing.describe()}
    return _by_ready(ready, serving)


def modelasset(conditions: dict[str, Cond], percent: int | None = None) -> dict[str, str]:
    """The verdict for an observed ModelAsset whose counted conditions are `conditions`."""
    failed = conditions.get("Failed")
    downloading = conditions.get("Downloading")
    if _true(failed):
        assert failed is not None
        return {"status": "Degraded", "message": failed.describe()}
    if _true(downloading):
        assert downloading is not None
        suffix = f" ({percent}%)" if percent is not None else ""
        return {"status": "Progressing", "message": downloading.describe() + suffix}
    return _by_ready(conditions.get("Ready"), "")


def _true(c: Cond | None) -> bool:
    return c is not None and c.status == "True"


def _by_ready(ready: Cond | None, serving: str) -> dict[str, str]:
    if ready is None:
        return WAITING_FOR_READY
    if ready.status == "True":
        text = ready.message or ready.reason
        return {"status": "Healthy", "message": f"{text} ({serving})" if serving else text}
    if ready.status == "False":
        return {"status": "Progressing", "message": ready.describe()}
    return {"status": "Unknown", "message": ready.describe()}
