"""The rollout state machine as a table: (observed state, spec) -> next step."""

from __future__ import annotations

import datetime

import pytest

from voice_operator.api.voiceagent import ComponentRevision, ComponentStatus, FailedRollout
from voice_operator.plan.rollout import (
    Blocked,
    DeploymentState,
    RolloutInput,
    next_rollout_step,
    revision_of,
)

pytestmark = pytest.mark.unit
NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)


def internal(version: str = "v1", **extra) -> ComponentRevision:
    return ComponentRevision(
        provider="internal",
        model="whisper",
        model_version=version,
        model_format="ggml",
        model_path=f"/models/whisper/{version}/m.bin",
        claim_name="whisper-models",
        image="engines:1",
        **extra,
    )


def external(vendor: str = "deepgram") -> ComponentRevision:
    return ComponentRevision(
        provider="external",
        external={"vendor": vendor, "apiKeySecretRef": {"name": "k", "key": "api-key"}},
    )


def good(rev: ComponentRevision, **extra) -> ComponentStatus:
    return ComponentStatus(last_good=rev, last_good_revision=revision_of(rev), **extra)


def deployment(
    rev: ComponentRevision | None,
    *,
    replicas: int = 1,
    ready: int = 1,
    updated: int | None = None,
    deadline: bool = False,
    observed: int = 2,
) -> DeploymentState:
    return DeploymentState(
        template_revision=revision_of(rev) if rev else None,
        generation=2,
        observed_generation=observed,
        replicas=replicas,
        status_replicas=replicas,
        updated_replicas=replicas if updated is None else updated,
        ready_replicas=ready,
        available_replicas=ready,
        deadline_exceeded=deadline,
    )


def step(desired, status=None, dep=None, **kw):
    inp = dict(
        component="stt",
        desired=desired,
        status=status or ComponentStatus(),
        deployment=dep,
        replicas=1,
        crash_loop=None,
        probe_passed=None,
        probe_threshold=1,
        gateway_has_key=True,
        auto_rollback=True,
        generation=5,
        now=NOW,
        grace_seconds=600,
        settle_seconds=0,
        history_limit=10,
    )
    inp.update(kw)
    return next_rollout_step(RolloutInput(**inp))


V1, V2, EXT = internal("v1"), internal("v2"), external()


def test_first_rollout_waits_for_the_deployment_then_serves():
    s = step(V1, dep=None)
    assert (s.state, s.engine, s.engine_revision, s.route) == ("RollingOut", "apply", V1, None)
    s = step(V1, dep=deployment(V1))
    assert (s.state, s.route) == ("Serving", V1)
    assert s.status.last_good_revision == revision_of(V1)
    assert [e.reason for e in s.events] == ["RolloutSucceeded"]


def test_steady_state_serves_and_reapplies_the_same_template():
    s = step(V1, good(V1), deployment(V1))
    assert (s.state, s.engine, s.engine_revision, s.route) == ("Serving", "apply", V1, V1)
    assert s.events == []
    assert s.status.serving == "internal whisper@v1"


def test_steady_state_without_ready_pods_is_unavailable_not_a_failed_rollout():
    s = step(V1, good(V1), deployment(V1, ready=0))
    assert (s.state, s.reason, s.route) == ("Unavailable", "EngineUnavailable", V1)
    assert s.message == "stt engine has no ready pod (0/1)"
    assert s.status.failed is None


def test_steady_state_serves_while_pods_are_replaced():
    """A drift correction or an HPA adds pods of the same revision: still serving."""
    surge = DeploymentState(revision_of(V1), 3, 2, 3, 4, 1, 4, 3, deadline_exceeded=False)
    assert step(V1, good(V1), surge).state == "Serving"


@pytest.mark.parametrize(
    ("dep", "state"),
    [
        (deployment(V1), "RollingOut"),  # old template still there
        (deployment(V2, updated=0, ready=1), "RollingOut"),  # new pod not ready yet
        (deployment(V2, observed=1), "RollingOut"),  # controller hasn't seen it
        (deployment(V2), "Serving"),
    ],
)
def test_version_bump_moves_the_route_only_when_rolled_out(dep, state):
    s = step(V2, good(V1), dep)
    assert (s.state, s.engine, s.engine_revision) == (state, "apply", V2)
    assert s.route == (V2 if state == "Serving" else V1)


def test_progress_deadline_rolls_back_to_last_good():
    # One old pod serving, one new pod that never got ready, deadline exceeded.
    stuck = DeploymentState(revision_of(V2), 2, 2, 1, 2, 1, 1, 1, deadline_exceeded=True)
    s = step(V2, good(V1), stuck)
    assert (s.state, s.reason, s.engine_revision, s.route) == (
        "RolledBack",
        "ProgressDeadlineExceeded",
        V1,
        V1,
    )
    assert s.status.failed.rolled_back is True
    assert s.status.failed.generation == 5
    assert [(e.type, e.reason) for e in s.events] == [("Warning", "RolledBack")]
    assert s.status.history[0].result == "Failed"


def test_stale_deadline_from_before_the_template_change_does_not_count():
    stale = DeploymentState(revision_of(V2), 3, 2, 1, 1, 0, 1, 1, deadline_exceeded=False)
    assert step(V2, good(V1), stale).state == "RollingOut"


def test_crash_loop_rolls_back():
    s = step(V2, good(V1), deployment(V2, ready=0), crash_loop="pod x restarted 5 times")
    assert (s.state, s.reason, s.engine_revision) == ("RolledBack", "CrashLoop", V1)


def test_failed_revision_is_not_retried_in_the_same_generation():
    failed = FailedRollout(
        revision=revision_of(V2), generation=5, reason="CrashLoop", rolled_back=True
    )
    s = step(V2, good(V1, failed=failed), deployment(V1))
    assert (s.state, s.engine_revision, s.route) == ("RolledBack", V1, V1)
    assert s.events == []


def test_a_spec_change_gives_the_failed_revision_another_chance():
    failed = FailedRollout(
        revision=revision_of(V2), generation=4, reason="CrashLoop", rolled_back=True
    )
    s = step(V2, good(V1, failed=failed), deployment(V1), generation=5)
    assert (s.state, s.engine_revision) == ("RollingOut", V2)
    assert s.status.failed is None


def test_pointing_the_spec_back_clears_the_failure():
    failed = FailedRollout(
        revision=revision_of(V2), generation=5, reason="CrashLoop", rolled_back=True
    )
    s = step(V1, good(V1, failed=failed), deployment(V1), generation=6)
    assert (s.state, s.status.failed) == ("Serving", None)


def test_without_auto_rollback_the_failed_template_stays():
    s = step(
        V2,
        good(V1),
        DeploymentState(revision_of(V2), 2, 2, 1, 2, 0, 1, 1, True),
        auto_rollback=False,
    )
    assert (s.state, s.engine_revision, s.route) == ("Failed", V2, V1)
    assert s.status.failed.rolled_back is False
    assert [e.reason for e in s.events] == ["RolloutFailed"]


def test_first_rollout_failing_has_nothing_to_roll_back_to():
    s = step(V1, None, DeploymentState(revision_of(V1), 2, 2, 1, 1, 0, 0, 0, True))
    assert (s.state, s.route, s.engine_revision) == ("Failed", None, V1)
    assert "there is no earlier revision" in s.events[0].message


def test_probe_failures_up_to_the_threshold_then_roll_back():
    status = good(V1)
    s = step(V2, status, deployment(V2), probe_passed=False, probe_threshold=2)
    assert (s.state, s.status.probe_failures, s.requeue_after) == ("RollingOut", 1, 5.0)
    s = step(V2, s.status, deployment(V2), probe_passed=False, probe_threshold=2)
    assert (s.state, s.reason) == ("RolledBack", "ProbeFailed")
    s = step(V2, good(V1), deployment(V2), probe_passed=True, probe_threshold=2)
    assert s.state == "Serving"


def test_internal_to_external_flips_the_route_first_then_scales_to_zero():
    # The route flips; the engine keeps serving while the gateways load the new route.
    s = step(EXT, good(V1), deployment(V1), settle_seconds=90)
    assert (s.state, s.route, s.engine, s.engine_revision) == ("Serving", EXT, "apply", V1)
    assert (s.status.draining, s.status.route_moved_at, s.status.scaled_down_at) == (V1, NOW, None)
    assert s.requeue_after == 90
    assert [e.reason for e in s.events] == ["RolloutSucceeded", "RouteSwitched"]

    # Within the settle time nothing moves; no second flip, no second Event.
    later = NOW + datetime.timedelta(seconds=60)
    s = step(EXT, s.status, deployment(V1), settle_seconds=90, now=later)
    assert (s.state, s.route, s.engine, s.engine_revision) == ("Serving", EXT, "apply", V1)
    assert s.requeue_after == 30
    assert s.events == []

    # Then the engine goes to zero, kept for the grace period.
    later = NOW + datetime.timedelta(seconds=91)
    s = step(EXT, s.status, deployment(V1), settle_seconds=90, now=later)
    assert (s.state, s.route, s.engine, s.engine_revision) == ("Serving", EXT, "scale-to-zero", V1)
    assert (s.status.draining, s.status.scaled_down_at) == (None, later)
    assert s.requeue_after == 600
    s = step(EXT, s.status, deployment(V1, replicas=0, ready=0), now=later)
    assert (s.engine, s.events) == ("keep", [])


def test_a_spec_change_while_draining_deletes_the_engine_once_drained():
    s = step(EXT, good(V1), deployment(V1), settle_seconds=90)
    later = NOW + datetime.timedelta(seconds=91)
    s = step(EXT, s.status, deployment(V1), settle_seconds=90, now=later, generation=6)
    assert s.engine == "scale-to-zero"
    s = step(EXT, s.status, deployment(V1, replicas=0, ready=0), now=later, generation=6)
    assert s.engine == "delete"


def test_switching_back_while_the_engine_drains_needs_no_new_pods():
    s = step(EXT, good(V1), deployment(V1), settle_seconds=90)
    s = step(V1, s.status, deployment(V1), settle_seconds=90, generation=6)
    assert (s.state, s.route, s.engine, s.engine_revision) == ("Serving", V1, "apply", V1)
    assert s.status.draining is None


def test_external_switch_waits_for_the_gateway_to_mount_the_key():
    s = step(EXT, good(V1), deployment(V1), gateway_has_key=False)
    assert (s.state, s.reason, s.route, s.engine_revision) == (
        "RollingOut",
        "WaitingForGateway",
        V1,
        V1,
    )


@pytest.mark.parametrize(
    ("waited", "generation", "engine"),
    [(60, 5, "keep"), (601, 5, "delete"), (60, 6, "delete")],
)
def test_idle_engine_is_kept_for_the_grace_period_or_until_the_next_change(
    waited, generation, engine
):
    status = good(
        EXT, scaled_down_at=NOW - datetime.timedelta(seconds=waited), scaled_down_generation=5
    )
    s = step(EXT, status, deployment(V1, replicas=0, ready=0), generation=generation)
    assert (s.state, s.engine) == ("Serving", engine)


def test_external_to_internal_brings_the_engine_up_before_the_route():
    zero = deployment(V1, replicas=0, ready=0)  # kept at zero since the switch
    s = step(V1, good(EXT), zero)
    assert (s.state, s.route, s.engine) == ("RollingOut", EXT, "apply")
    s = step(V1, good(EXT), deployment(V1))
    assert (s.state, s.route) == ("Serving", V1)
    assert s.status.scaled_down_at is None


def test_blocked_keeps_serving_the_last_good_revision():
    blocked = Blocked("Degraded", "SecretNotFound", "Secret k does not exist")
    s = step(blocked, good(V1), deployment(V1))
    assert (s.state, s.reason, s.route, s.engine_revision) == ("Blocked", "SecretNotFound", V1, V1)
    s = step(blocked, ComponentStatus(), None)
    assert (s.route, s.engine) == (None, "keep")


def test_history_is_bounded_and_newest_first():
    status = good(V1)
    for i in range(2, 15):
        s = step(internal(f"v{i}"), status, deployment(internal(f"v{i}")), history_limit=4)
        status = s.status
    assert [h.model_version for h in status.history] == ["v14", "v13", "v12", "v11"]
    assert [h.result for h in status.history] == ["Serving"] + ["Superseded"] * 3
