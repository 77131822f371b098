"""What a VoiceAgent needs next: per stage a rollout step (rollout.py), then the children in
a safe order, the status with its conditions, and the Events of what changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from voice_operator.api.common import Condition
from voice_operator.api.voiceagent import (
    COMPONENTS,
    ComponentName,
    ComponentRevision,
    ComponentsStatus,
    ComponentStatus,
    GatewayStatus,
    VoiceAgentStatus,
)
from voice_operator.conditions import set_condition, transition_events
from voice_operator.observe import (
    AgentObservation,
    DeploymentState,
    PodState,
    SecretPresence,
)
from voice_operator.plan import Plan, ProbeRequest, field_errors, status_patch
from voice_operator.plan.revisions import desired_revision, model_failure
from voice_operator.plan.rollout import (
    RolloutInput,
    RolloutStep,
    next_rollout_step,
    revision_of,
)
from voice_operator.render.voiceagent import (
    Agent,
    child_name,
    desired_engine_deployment,
    desired_gateway_deployment,
    desired_routes,
    desired_service,
    engine_url,
    gateway_url,
)
from voice_operator.settings import OperatorSettings

__all__ = ["AgentObservation", "plan_voice_agent"]

CRASH_RESTARTS = 3


# A probe that failed is tried again after this long (the reconcile that sees the
# failure asks for the next attempt).
PROBE_RETRY_SECONDS = 5.0


def crash_loop(pods: list[PodState], component: str, revision: str) -> str | None:
    """Why pods of `revision` keep crashing, if they do."""
    for pod in pods:
        if pod.component != component or pod.revision != revision:
            continue
        for cs in pod.containers:
            if cs.waiting_reason == "CrashLoopBackOff" or cs.restarts >= CRASH_RESTARTS:
                return (
                    f"pod {pod.name}: container {cs.name} restarted "
                    f"{cs.restarts} times ({cs.waiting_reason or 'crashing'})"
                )
    return None


def _gateway_keys(agent: Agent, status: VoiceAgentStatus) -> dict[str, dict[str, str]]:
    """Keys the gateway must mount: every stage whose spec is external (so the key is there
    before the route moves), whose last good revision is external (it serves until the
    route moves back), and every fallback."""
    keys: dict[str, dict[str, str]] = {}
    for c in COMPONENTS:
        spec = agent.spec.component(c)
        good = getattr(status.components, c)
        serving = (good.last_good.external if good and good.last_good else None) or {}
        if spec.provider == "external" and spec.external is not None:
            ref = spec.external.api_key_secret_ref
            keys[c] = {"name": ref.name, "key": ref.key}
        elif serving.get("apiKeySecretRef"):
            keys[c] = dict(serving["apiKeySecretRef"])
        if spec.fallback is not None:
            ref = spec.fallback.api_key_secret_ref
            keys[f"{c}-fallback"] = {"name": ref.name, "key": ref.key}
    return keys


def _fallbacks(agent: Agent, secrets: dict[str, SecretPresence]) -> dict[str, dict[str, Any]]:
    """Each stage's fallback vendor, once its key exists (never a route to a missing key)."""
    found: dict[str, dict[str, Any]] = {}
    for c in COMPONENTS:
        fallback = agent.spec.component(c).fallback
        if fallback is None:
            continue
        ref = fallback.api_key_secret_ref
        secret = secrets.get(ref.name)
        if secret is not None and ref.key in secret.keys:
            found[c] = fallback.wire()
    return found


def _gateway_rolled_out(state: DeploymentState | None) -> bool:
    return state is not None and state.settled


def _stage_serves(step: RolloutStep) -> bool:
    if step.route is None:
        return False
    return step.route.provider == "external" or step.status.ready_replicas > 0


def _first(
    steps: dict[ComponentName, RolloutStep], states: set[str]
) -> tuple[ComponentName, RolloutStep] | None:
    return next(((c, s) for c, s in steps.items() if s.state in states), None)


Steps = dict[ComponentName, RolloutStep]
# (status, reason, message) of one condition.
Verdict = tuple[Literal["True", "False"], str, str]


@dataclass(frozen=True)
class _Facts:
    """What the conditions are judged on."""

    steps: Steps
    gateway_ok: bool
    model_failures: dict[ComponentName, str]


# What needs the user's attention first, then what is merely on its way.
_URGENCY = {"Failed": 0, "Blocked": 0, "RolledBack": 0, "Unavailable": 1, "RollingOut": 2}


def _ready(f: _Facts) -> Verdict:
    not_serving = sorted(
        ((c, s) for c, s in f.steps.items() if not _stage_serves(s)),
        key=lambda cs: _URGENCY.get(cs[1].state, 3),
    )
    if not_serving:
        c, s = not_serving[0]
        return "False", s.reason, f"{c}: {s.message}"
    if not f.gateway_ok:
        return "False", "GatewayUnavailable", "the gateway has no available pod yet"
    return "True", "Serving", "every stage and the gateway serve"


def _progressing(f: _Facts) -> Verdict:
    moving = next(
        (
            (c, s)
            for c, s in f.steps.items()
            if s.state == "Blocked" and s.reason == "ModelNotReady"
        ),
        None,
    ) or _first(f.steps, {"RollingOut"})
    if moving:
        c, s = moving
        return "True", s.reason, f"{c}: {s.message}"
    return "False", "Stable", "no rollout in progress"


def _degraded(f: _Facts) -> Verdict:
    bad = _first(f.steps, {"Failed", "RolledBack", "Unavailable"}) or next(
        (
            (c, s)
            for c, s in f.steps.items()
            if s.state == "Blocked" and s.reason != "ModelNotReady"
        ),
        None,
    )
    if bad:
        c, s = bad
        return "True", s.reason, f"{c}: {s.message}"
    if f.model_failures:
        c, message = next(iter(f.model_failures.items()))
        return "True", "ModelVersionFailed", f"{c}: {message}"
    return "False", "AsExpected", "nothing failed"


def _rolled_back(f: _Facts) -> Verdict:
    rolled = _first(f.steps, {"RolledBack"})
    if rolled:
        c, s = rolled
        return "True", s.reason, f"{c}: {s.message}"
    return "False", "NoRollback", "serving the spec's revisions or rolling out to them"


# The agent's conditions, each judged by one rule, in the order they are written.
CONDITIONS: tuple[tuple[str, Callable[[_Facts], Verdict]], ...] = (
    ("Ready", _ready),
    ("Progressing", _progressing),
    ("Degraded", _degraded),
    ("RolledBack", _rolled_back),
)


def _conditions(obs: AgentObservation, facts: _Facts) -> list[Condition]:
    conditions = obs.status.conditions
    for type_, rule in CONDITIONS:
        status, reason, message = rule(facts)
        conditions = set_condition(
            conditions, type_, status, reason, message, obs.generation, obs.now
        )
    return conditions


def _invalid(obs: AgentObservation, error: ValidationError) -> Plan:
    plan = Plan(reasons=["the spec is invalid: nothing is applied"])
    status = obs.status
    message = field_errors(error)
    conditions = set_condition(
        status.conditions, "Degraded", "True", "InvalidSpec", message, obs.generation, obs.now
    )
    conditions = set_condition(
        conditions, "Ready", "False", "InvalidSpec", message, obs.generation, obs.now
    )
    before = status.wire()
    after = {
        **before,
        "conditions": [c.wire() for c in conditions],
        "observedGeneration": obs.generation,
    }
    plan.status_patch = status_patch(before, after)
    plan.events = transition_events(status.conditions, conditions)
    return plan


def _probe(
    obs: AgentObservation, agent: Agent, c: ComponentName, good: str | None
) -> tuple[bool | None, ProbeRequest | None]:
    """(the probe's verdict on the stage's new revision, or None; the attempt to ask for).

    A revision is probed once its Deployment has rolled it out and until it is known
    good; each attempt's result is seen by exactly one reconcile."""
    probe = agent.spec.rollout.probe
    state = obs.deployments.get(c)
    if probe is None or state is None or state.template_revision in (None, good):
        return None, None
    revision = state.template_revision or ""
    if not state.rolled_out(revision):
        return None, None
    result = obs.probes.get(c)
    passed = result.passed if result is not None and result.revision == revision else None
    if passed is True:
        return True, None
    request = ProbeRequest(
        stage=c,
        revision=revision,
        url=engine_url(agent.name, agent.namespace, c) + probe.path,
        timeout_seconds=probe.timeout_seconds,
        after_seconds=0.0 if passed is None else PROBE_RETRY_SECONDS,
    )
    return passed, request


def plan_voice_agent(obs: AgentObservation, settings: OperatorSettings) -> Plan:
    if isinstance(obs.spec, ValidationError):
        return _invalid(obs, obs.spec)
    spec = obs.spec
    agent = Agent(obs.owner, spec)
    status = obs.status
    plan = Plan()

    gateway = obs.deployments.get("gateway")
    keys_wanted = _gateway_keys(agent, status)
    keys_ready = _gateway_rolled_out(gateway)
    mounted = gateway.mounted_keys if gateway else {}

    steps: Steps = {}
    model_failures: dict[ComponentName, str] = {}
    for c in COMPONENTS:
        component_spec = spec.component(c)
        desired = desired_revision(c, component_spec, obs.assets, obs.secrets, settings)
        if component_spec.provider == "internal" and component_spec.model:
            failure = model_failure(obs.assets.get(component_spec.model))
            if failure:
                model_failures[c] = failure
        old = getattr(status.components, c) or ComponentStatus()
        rev = revision_of(desired) if isinstance(desired, ComponentRevision) else None
        probe_passed, probe_request = _probe(obs, agent, c, old.last_good_revision)
        if probe_request is not None:
            plan.probes.append(probe_request)
        steps[c] = next_rollout_step(
            RolloutInput(
                component=c,
                desired=desired,
                status=old,
                deployment=obs.deployments.get(c),
                replicas=component_spec.replicas,
                crash_loop=crash_loop(obs.pods, c, rev) if rev else None,
                probe_passed=probe_passed,
                probe_threshold=spec.rollout.probe.failure_threshold if spec.rollout.probe else 1,
                probe_pending=probe_request is not None and probe_passed is None,
                gateway_has_key=keys_ready
                and c in keys_wanted
                and mounted.get(c) == keys_wanted[c],
                auto_rollback=spec.rollout.auto_rollback,
                generation=obs.generation,
                now=obs.now,
                grace_seconds=settings.scale_down_grace_seconds,
                settle_seconds=settings.route_settle_seconds,
                history_limit=settings.history_limit,
            )
        )
        plan.reasons.append(f"{c}: {steps[c].state} ({steps[c].reason}): {steps[c].message}")

    _children(plan, agent, steps, obs, keys_wanted, settings)
    gateway_ok = gateway is not None and gateway.available_replicas > 0
    components = {}
    for c, step in steps.items():
        route = step.route
        endpoint = None
        if route is not None:
            endpoint = (
                engine_url(agent.name, agent.namespace, c)
                if route.provider == "internal"
                else ((route.external or {}).get("url") or (route.external or {}).get("vendor"))
            )
        components[c] = step.status.model_copy(update={"endpoint": endpoint})
        plan.events.extend(step.events)
        if step.requeue_after is not None:
            plan.requeue(step.requeue_after)
        if step.state == "RollingOut":
            plan.requeue(30.0)  # a safety net; Deployment events normally wake us first
    new = VoiceAgentStatus(
        conditions=_conditions(obs, _Facts(steps, gateway_ok, model_failures)),
        components=ComponentsStatus(**components),
        gateway=GatewayStatus(
            url=gateway_url(agent),
            ready_replicas=gateway.ready_replicas if gateway else 0,
        ),
        observed_generation=obs.generation,
    )
    plan.status_patch = status_patch(status.wire(), new.wire())
    plan.events = transition_events(status.conditions, new.conditions) + plan.events
    return plan


def _replicas(obs: AgentObservation, name: str, wanted: int) -> int | None:
    """None leaves replicas to the HPA that scales this Deployment."""
    return None if name in obs.autoscaled else wanted


def _children(
    plan: Plan,
    agent: Agent,
    steps: dict[ComponentName, RolloutStep],
    obs: AgentObservation,
    keys: dict[str, dict[str, str]],
    settings: OperatorSettings,
) -> None:
    """Children in a safe order: engines that must be up before the route moves, the
    routes, the gateway, then engines scaled down after the route left them."""
    later: list[dict[str, Any]] = []
    for c, step in steps.items():
        name = child_name(agent.name, c)
        wanted = agent.spec.component(c).replicas
        if step.engine == "apply" and step.engine_revision is not None:
            plan.apply.append(
                desired_engine_deployment(
                    agent, c, step.engine_revision, _replicas(obs, name, wanted), settings
                )
            )
        elif step.engine == "scale-to-zero" and step.engine_revision is not None:
            later.append(desired_engine_deployment(agent, c, step.engine_revision, 0, settings))
        elif step.engine == "delete":
            plan.delete.append(("Deployment", name))
            plan.delete.append(("Service", name))
        if step.engine in ("apply", "scale-to-zero") or (
            step.engine == "keep" and c in obs.deployments
        ):
            plan.apply.append(desired_service(agent, c))
    routes: dict[str, ComponentRevision | None] = {c: s.route for c, s in steps.items()}
    plan.apply.append(desired_routes(agent, routes, _fallbacks(agent, obs.secrets)))
    gateway_name = child_name(agent.name, "gateway")
    plan.apply.append(
        desired_gateway_deployment(
            agent, keys, _replicas(obs, gateway_name, agent.spec.gateway.replicas), settings
        )
    )
    service = agent.spec.gateway.service
    plan.apply.append(desired_service(agent, "gateway", service.port, service.type))
    plan.apply.extend(later)
