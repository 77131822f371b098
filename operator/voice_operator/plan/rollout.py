"""The rollout state machine of one stage (DESIGN §3): observed state + spec -> next step.

Pure: no API calls, no clocks. The revision a stage should run (`desired`) is compared with
the last revision that became healthy (`status.last_good`):

- equal: steady; serve it.
- internal desired: its Deployment rolls (maxUnavailable 0); the gateway keeps its route
  until the new revision is rolled out (and passed the probe), then last_good moves.
- external desired: the gateway must mount the key first; then the route flips. An
  internal engine that served before keeps running while the gateways load the new route
  (`settle_seconds`), then is scaled to zero (kept for a fast switch back), and deleted
  after a grace period or the next spec change.
- failure (progress deadline, crash loop, probe): with autoRollback the Deployment and the
  route go back to last_good; either way the failed revision is not retried until the
  agent's spec changes (its generation moves).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Literal

from voice_operator.api.voiceagent import (
    ComponentRevision,
    ComponentStatus,
    FailedRollout,
    RevisionRecord,
)
from voice_operator.conditions import EventSpec
from voice_operator.observe import DeploymentState


def revision_of(revision: ComponentRevision) -> str:
    return revision.revision


@dataclass(frozen=True)
class Blocked:
    """The spec can't be turned into a revision right now."""

    condition: Literal["Progressing", "Degraded"]
    reason: str
    message: str


@dataclass(frozen=True)
class RolloutInput:
    component: str
    desired: ComponentRevision | Blocked
    status: ComponentStatus
    deployment: DeploymentState | None
    replicas: int  # the spec's replica count
    crash_loop: str | None  # why pods of the desired revision crash-loop, if they do
    probe_passed: bool | None  # None: no probe configured, or none finished since last time
    probe_threshold: int
    gateway_has_key: bool  # gateway pods mount the desired external key
    auto_rollback: bool
    generation: int
    now: datetime.datetime
    grace_seconds: float
    settle_seconds: float  # how long an engine the route left keeps serving
    history_limit: int
    # A probe is configured and this revision has not passed it yet: it may not succeed.
    probe_pending: bool = False


EngineAction = Literal["apply", "scale-to-zero", "keep", "delete"]
StageState = Literal["Serving", "RollingOut", "Blocked", "Unavailable", "Failed", "RolledBack"]


@dataclass
class RolloutStep:
    engine: EngineAction
    engine_revision: ComponentRevision | None  # the template to apply (apply / scale-to-zero)
    route: ComponentRevision | None  # where the gateway sends this stage; None = nowhere
    status: ComponentStatus
    state: StageState
    reason: str
    message: str
    events: list[EventSpec] = field(default_factory=list)
    requeue_after: float | None = None


def _summary(rev: ComponentRevision | None) -> str:
    if rev is None:
        return "-"
    if rev.provider == "internal":
        return f"internal {rev.model}@{rev.model_version}"
    ext = rev.external or {}
    vendor = ext.get("vendor", "?")
    return f"external {vendor}:{ext['model']}" if ext.get("model") else f"external {vendor}"


def _record(
    rev: ComponentRevision,
    result: Literal["Serving", "Superseded", "Failed"],
    now: datetime.datetime,
    reason: str | None = None,
) -> RevisionRecord:
    return RevisionRecord(
        revision=revision_of(rev),
        provider=rev.provider,
        model_version=rev.model_version,
        result=result,
        reason=reason,
        at=now,
    )


def _history(status: ComponentStatus, record: RevisionRecord, limit: int) -> list[RevisionRecord]:
    """Newest first; a new Serving record supersedes the previous one."""
    older = [
        r.model_copy(update={"result": "Superseded"})
        if record.result == "Serving" and r.result == "Serving"
        else r
        for r in status.history
        if r.revision != record.revision or r.result == "Failed"
    ]
    return [record, *older][:limit]


def _with_serving(
    status: ComponentStatus, route: ComponentRevision | None, ready_replicas: int
) -> ComponentStatus:
    return status.model_copy(
        update={
            "provider": route.provider if route else None,
            "model": route.model if route else None,
            "model_version": route.model_version if route else None,
            "revision": revision_of(route) if route else None,
            "serving": _summary(route),
            "ready_replicas": ready_replicas,
        }
    )


def _serve_last_good(status: ComponentStatus) -> tuple[EngineAction, ComponentRevision | None]:
    """Engine action that keeps last_good serving."""
    good = status.last_good
    if good is not None and good.provider == "internal":
        return "apply", good
    return "keep", None


def _retire_internal(
    inp: RolloutInput, status: ComponentStatus
) -> tuple[EngineAction, ComponentRevision | None, ComponentStatus, float | None]:
    """The internal engine a switch to external left behind: it serves on until the
    gateways have loaded the new route, then waits at zero replicas for a fast switch back,
    and is deleted after the grace period or at the next spec change."""
    if status.draining is not None:
        moved = status.route_moved_at or inp.now
        left = inp.settle_seconds - (inp.now - moved).total_seconds()
        if left > 0:
            return "apply", status.draining, status, left
        scaled = status.model_copy(
            update={
                "draining": None,
                "route_moved_at": None,
                "scaled_down_at": inp.now,
                "scaled_down_generation": status.scaled_down_generation or inp.generation,
            }
        )
        return "scale-to-zero", status.draining, scaled, inp.grace_seconds
    engine, status, again = _retire_scaled_down(inp, status)
    return engine, None, status, again


def _retire_scaled_down(
    inp: RolloutInput, status: ComponentStatus
) -> tuple[EngineAction, ComponentStatus, float | None]:
    if status.scaled_down_at is None:
        return "keep", status, None
    waited = (inp.now - status.scaled_down_at).total_seconds()
    if waited >= inp.grace_seconds or status.scaled_down_generation != inp.generation:
        return (
            "delete",
            status.model_copy(update={"scaled_down_at": None, "scaled_down_generation": None}),
            None,
        )
    return "keep", status, inp.grace_seconds - waited


def next_rollout_step(inp: RolloutInput) -> RolloutStep:
    status = inp.status
    good = status.last_good
    ready = inp.deployment.ready_replicas if inp.deployment else 0

    if isinstance(inp.desired, Blocked):
        engine, engine_rev = _serve_last_good(status)
        status = status.model_copy(update={"desired_revision": None})
        return RolloutStep(
            engine,
            engine_rev,
            good,
            _with_serving(status, good, ready),
            "Blocked",
            inp.desired.reason,
            inp.desired.message,
        )

    desired = inp.desired
    rev = revision_of(desired)
    status = status.model_copy(update={"desired_revision": rev})
    failed = status.failed
    if failed and (failed.revision != rev or failed.generation != inp.generation):
        failed = None  # the spec changed since: the new revision gets its chance
        status = status.model_copy(update={"failed": None, "probe_failures": 0})

    if good is not None and rev == status.last_good_revision:
        return _steady(inp, status, desired, ready)
    if failed is not None:
        return _stay_failed(status, failed, desired, ready)
    if desired.provider == "external":
        return _switch_to_external(inp, status, desired, rev, ready)
    return _roll_out_internal(inp, status, desired, rev, ready)


def _steady(
    inp: RolloutInput, status: ComponentStatus, desired: ComponentRevision, ready: int
) -> RolloutStep:
    status = status.model_copy(update={"failed": None, "probe_failures": 0})
    if desired.provider == "external":
        engine, engine_rev, status, again = _retire_internal(inp, status)
        return RolloutStep(
            engine,
            engine_rev,
            desired,
            _with_serving(status, desired, 0),
            "Serving",
            "Serving",
            f"{inp.component} is served by {_summary(desired)}",
            requeue_after=again,
        )
    dep = inp.deployment
    # The revision is known good: any ready pod serves it, even while a drift correction
    # or an autoscaler replaces pods. Only no ready pod at all is an outage.
    if dep is not None and ready > 0:
        state: StageState = "Serving"
        reason, message = "Serving", f"{inp.component} is served by {_summary(desired)}"
    else:
        state, reason = "Unavailable", "EngineUnavailable"
        wanted = dep.replicas if dep is not None else inp.replicas
        message = f"{inp.component} engine has no ready pod (0/{wanted})"
    return RolloutStep(
        "apply", desired, desired, _with_serving(status, desired, ready), state, reason, message
    )


def _stay_failed(
    status: ComponentStatus,
    failed: FailedRollout,
    desired: ComponentRevision,
    ready: int,
) -> RolloutStep:
    good = status.last_good
    if failed.rolled_back:
        engine, engine_rev = _serve_last_good(status)
        if good is not None and good.provider == "external" and desired.provider == "internal":
            engine, engine_rev = "scale-to-zero", desired
        return RolloutStep(
            engine,
            engine_rev,
            good,
            _with_serving(status, good, ready),
            "RolledBack",
            failed.reason,
            f"revision {failed.revision} failed ({failed.message}); rolled back "
            f"to {status.last_good_revision}",
        )
    # autoRollback off: leave the failed rollout where it stopped; old pods keep serving.
    return RolloutStep(
        "apply",
        desired,
        good,
        _with_serving(status, good, ready),
        "Failed",
        failed.reason,
        f"revision {failed.revision} failed ({failed.message}); autoRollback "
        "is off, so it stays as it is",
    )


def _succeed(
    inp: RolloutInput,
    status: ComponentStatus,
    desired: ComponentRevision,
    rev: str,
    ready: int,
    engine: EngineAction,
    engine_rev: ComponentRevision | None,
    extra: dict | None = None,
) -> RolloutStep:
    previous = status.last_good
    status = status.model_copy(
        update={
            "last_good": desired,
            "last_good_revision": rev,
            "failed": None,
            "probe_failures": 0,
            "history": _history(status, _record(desired, "Serving", inp.now), inp.history_limit),
            **(extra or {}),
        }
    )
    events = [
        EventSpec(
            "Normal",
            "RolloutSucceeded",
            f"{inp.component} revision {rev} is serving: {_summary(desired)}",
            component=inp.component,
        )
    ]
    if previous is not None and previous.provider != desired.provider:
        events.append(
            EventSpec(
                "Normal",
                "RouteSwitched",
                f"{inp.component} route: {_summary(previous)} -> {_summary(desired)}",
                component=inp.component,
            )
        )
    return RolloutStep(
        engine,
        engine_rev,
        desired,
        _with_serving(status, desired, ready),
        "Serving",
        "Serving",
        f"{inp.component} is served by {_summary(desired)}",
        events,
    )


def _switch_to_external(
    inp: RolloutInput, status: ComponentStatus, desired: ComponentRevision, rev: str, ready: int
) -> RolloutStep:
    good = status.last_good
    if not inp.gateway_has_key:
        engine, engine_rev = _serve_last_good(status)
        return RolloutStep(
            engine,
            engine_rev,
            good,
            _with_serving(status, good, ready),
            "RollingOut",
            "WaitingForGateway",
            f"waiting for the gateway to mount the {inp.component} API key",
        )
    # Route first; the internal engine drains, then goes to zero (see _retire_internal).
    if good is not None and good.provider == "internal":
        extra = {
            "draining": good,
            "route_moved_at": inp.now,
            # The switch's generation: a later spec change ends the fast-switch-back window.
            "scaled_down_generation": inp.generation,
        }
        step = _succeed(inp, status, desired, rev, 0, "apply", good, extra)
        step.requeue_after = inp.settle_seconds
        return step
    engine, engine_rev, status, again = _retire_internal(inp, status)
    step = _succeed(inp, status, desired, rev, 0, engine, engine_rev)
    step.requeue_after = again
    return step


def _roll_out_internal(
    inp: RolloutInput, status: ComponentStatus, desired: ComponentRevision, rev: str, ready: int
) -> RolloutStep:
    good = status.last_good
    dep = inp.deployment
    # A Deployment still at zero from a switch to external is "rolled out" but serves
    # nothing: the route may only move once a pod of the revision is available.
    rolled_out = (
        dep is not None
        and dep.rolled_out(rev)
        and (inp.replicas == 0 or dep.available_replicas > 0)
    )
    failure: tuple[str, str] | None = None
    if dep is not None and dep.template_revision == rev and dep.deadline_exceeded:
        failure = (
            "ProgressDeadlineExceeded",
            f"pods of revision {rev} did not become ready in time",
        )
    elif inp.crash_loop:
        failure = ("CrashLoop", inp.crash_loop)
    elif rolled_out and inp.probe_passed is False:
        failures = status.probe_failures + 1
        status = status.model_copy(update={"probe_failures": failures})
        if failures >= inp.probe_threshold:
            failure = ("ProbeFailed", f"the rollout probe failed {failures} times")
    if failure is not None:
        return _fail(inp, status, desired, rev, ready, *failure)
    if rolled_out and inp.probe_passed is not False and not inp.probe_pending:
        extra = {
            "scaled_down_at": None,
            "scaled_down_generation": None,
            "draining": None,
            "route_moved_at": None,
        }
        return _succeed(inp, status, desired, rev, ready, "apply", desired, extra)
    step = RolloutStep(
        "apply",
        desired,
        good,
        _with_serving(status, good, ready),
        "RollingOut",
        "RollingOut",
        f"rolling out {inp.component} revision {rev} ({_summary(desired)})",
    )
    if rolled_out:  # waiting for the probe's next attempt
        step.requeue_after = 5.0
    if inp.status.desired_revision != rev:
        step.events.append(
            EventSpec(
                "Normal",
                "RolloutStarted",
                f"{inp.component}: {_summary(good)} -> {_summary(desired)} (revision {rev})",
                component=inp.component,
            )
        )
    return step


def _fail(
    inp: RolloutInput,
    status: ComponentStatus,
    desired: ComponentRevision,
    rev: str,
    ready: int,
    reason: str,
    message: str,
) -> RolloutStep:
    good = status.last_good
    roll_back = inp.auto_rollback and good is not None
    failed = FailedRollout(
        revision=rev,
        generation=inp.generation,
        reason=reason,
        message=message,
        rolled_back=roll_back,
        at=inp.now,
    )
    status = status.model_copy(
        update={
            "failed": failed,
            "history": _history(
                status, _record(desired, "Failed", inp.now, reason), inp.history_limit
            ),
        }
    )
    step = _stay_failed(status, failed, desired, ready)
    if roll_back:
        step.events.append(
            EventSpec(
                "Warning",
                "RolledBack",
                f"{inp.component} revision {rev} failed: {reason}: {message}; rolled back to "
                f"revision {status.last_good_revision} ({_summary(good)})",
                component=inp.component,
            )
        )
    else:
        why = "autoRollback is off" if good is not None else "there is no earlier revision"
        step.events.append(
            EventSpec(
                "Warning",
                "RolloutFailed",
                f"{inp.component} revision {rev} failed: {reason}: "
                f"{message}; not rolled back ({why})",
                component=inp.component,
            )
        )
    return step
