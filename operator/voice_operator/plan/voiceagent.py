"""What a VoiceAgent needs next: per stage a rollout step (rollout.py), then the children in
a safe order, the status with its conditions, and the Events of what changed."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from voice_operator.api.common import Condition
from voice_operator.api.voiceagent import (
    COMPONENTS,
    ComponentName,
    ComponentRevision,
    ComponentsStatus,
    ComponentStatus,
    GatewayStatus,
    VoiceAgentSpec,
    VoiceAgentStatus,
)
from voice_operator.conditions import set_condition, transition_events
from voice_operator.plan import Plan, field_errors, status_patch
from voice_operator.plan.revisions import SecretPresence, desired_revision, model_failure
from voice_operator.render.meta import ANNOTATION_REVISION, LABEL_COMPONENT, Owner
from voice_operator.render.voiceagent import (
    Agent,
    child_name,
    desired_engine_deployment,
    desired_gateway_deployment,
    desired_routes,
    desired_service,
    engine_url,
    gateway_url,
    mounted_keys,
)
from voice_operator.rollout import (
    DeploymentState,
    RolloutInput,
    RolloutStep,
    next_rollout_step,
    revision_of,
)
from voice_operator.settings import OperatorSettings

CRASH_RESTARTS = 3


@dataclass(frozen=True)
class AgentObservation:
    owner: Owner
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    assets: dict[str, dict[str, Any] | None]  # the ModelAssets the spec names
    secrets: dict[str, SecretPresence]  # the Secrets the spec names
    deployments: dict[str, dict[str, Any]]  # by part: stt, llm, tts, gateway
    pods: list[dict[str, Any]]
    autoscaled: frozenset[str]  # Deployment names an HPA scales
    probes: dict[str, bool | None]  # stage -> result of the rollout probe, when one ran
    now: datetime.datetime


def deployment_state(deployment: dict[str, Any] | None) -> DeploymentState | None:
    if deployment is None:
        return None
    spec, status = deployment["spec"], deployment.get("status") or {}
    annotations = spec["template"]["metadata"].get("annotations") or {}
    generation = deployment["metadata"].get("generation", 0)
    observed = status.get("observedGeneration", 0)
    deadline = any(
        c.get("type") == "Progressing"
        and c.get("status") == "False"
        and c.get("reason") == "ProgressDeadlineExceeded"
        for c in status.get("conditions", []) or []
    )
    return DeploymentState(
        template_revision=annotations.get(ANNOTATION_REVISION),
        generation=generation,
        observed_generation=observed,
        replicas=spec.get("replicas", 1),
        status_replicas=status.get("replicas", 0),
        updated_replicas=status.get("updatedReplicas", 0),
        ready_replicas=status.get("readyReplicas", 0),
        available_replicas=status.get("availableReplicas", 0),
        # A stale condition from before the last template change does not count.
        deadline_exceeded=deadline and observed >= generation,
    )


def crash_loop(pods: list[dict[str, Any]], component: str, revision: str) -> str | None:
    """Why pods of `revision` keep crashing, if they do."""
    for pod in pods:
        meta = pod["metadata"]
        if (
            meta.get("labels", {}).get(LABEL_COMPONENT) != component
            or (meta.get("annotations") or {}).get(ANNOTATION_REVISION) != revision
        ):
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses", []) or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if (
                waiting.get("reason") == "CrashLoopBackOff"
                or cs.get("restartCount", 0) >= CRASH_RESTARTS
            ):
                return (
                    f"pod {meta['name']}: container {cs['name']} restarted "
                    f"{cs.get('restartCount', 0)} times ({waiting.get('reason', 'crashing')})"
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


def _gateway_rolled_out(deployment: dict[str, Any] | None) -> bool:
    state = deployment_state(deployment)
    return state is not None and (
        state.observed_generation >= state.generation
        and state.updated_replicas == state.replicas
        and state.available_replicas >= state.replicas
        and state.status_replicas == state.replicas
    )


def _stage_serves(step: RolloutStep) -> bool:
    if step.route is None:
        return False
    return step.route.provider == "external" or step.status.ready_replicas > 0


def _first(
    steps: dict[ComponentName, RolloutStep], states: set[str]
) -> tuple[ComponentName, RolloutStep] | None:
    return next(((c, s) for c, s in steps.items() if s.state in states), None)


def _conditions(
    obs: AgentObservation,
    status: VoiceAgentStatus,
    steps: dict[ComponentName, RolloutStep],
    gateway_ok: bool,
    model_failures: dict[ComponentName, str],
) -> list[Condition]:
    gen, now = obs.generation, obs.now
    conditions = status.conditions
    # What needs the user's attention first, then what is merely on its way.
    urgency = {"Failed": 0, "Blocked": 0, "RolledBack": 0, "Unavailable": 1, "RollingOut": 2}
    not_serving = sorted(
        ((c, s) for c, s in steps.items() if not _stage_serves(s)),
        key=lambda cs: urgency.get(cs[1].state, 3),
    )
    if not_serving:
        c, s = not_serving[0]
        conditions = set_condition(
            conditions, "Ready", "False", s.reason, f"{c}: {s.message}", gen, now
        )
    elif not gateway_ok:
        conditions = set_condition(
            conditions,
            "Ready",
            "False",
            "GatewayUnavailable",
            "the gateway has no available pod yet",
            gen,
            now,
        )
    else:
        conditions = set_condition(
            conditions, "Ready", "True", "Serving", "every stage and the gateway serve", gen, now
        )

    moving = next(
        ((c, s) for c, s in steps.items() if s.state == "Blocked" and s.reason == "ModelNotReady"),
        None,
    ) or _first(steps, {"RollingOut"})
    if moving:
        c, s = moving
        conditions = set_condition(
            conditions, "Progressing", "True", s.reason, f"{c}: {s.message}", gen, now
        )
    else:
        conditions = set_condition(
            conditions, "Progressing", "False", "Stable", "no rollout in progress", gen, now
        )

    bad = _first(steps, {"Failed", "RolledBack", "Unavailable"}) or next(
        ((c, s) for c, s in steps.items() if s.state == "Blocked" and s.reason != "ModelNotReady"),
        None,
    )
    if bad:
        c, s = bad
        conditions = set_condition(
            conditions, "Degraded", "True", s.reason, f"{c}: {s.message}", gen, now
        )
    elif model_failures:
        c, message = next(iter(model_failures.items()))
        conditions = set_condition(
            conditions, "Degraded", "True", "ModelVersionFailed", f"{c}: {message}", gen, now
        )
    else:
        conditions = set_condition(
            conditions, "Degraded", "False", "AsExpected", "nothing failed", gen, now
        )

    rolled = _first(steps, {"RolledBack"})
    if rolled:
        c, s = rolled
        conditions = set_condition(
            conditions, "RolledBack", "True", s.reason, f"{c}: {s.message}", gen, now
        )
    else:
        conditions = set_condition(
            conditions,
            "RolledBack",
            "False",
            "NoRollback",
            "serving the spec's revisions or rolling out to them",
            gen,
            now,
        )
    return conditions


def _invalid(obs: AgentObservation, error: ValidationError) -> Plan:
    plan = Plan()
    status = VoiceAgentStatus.model_validate(obs.status)
    message = field_errors(error)
    conditions = set_condition(
        status.conditions, "Degraded", "True", "InvalidSpec", message, obs.generation, obs.now
    )
    conditions = set_condition(
        conditions, "Ready", "False", "InvalidSpec", message, obs.generation, obs.now
    )
    after = {
        **obs.status,
        "conditions": [c.wire() for c in conditions],
        "observedGeneration": obs.generation,
    }
    plan.status_patch = status_patch(obs.status, after)
    plan.events = transition_events(status.conditions, conditions)
    return plan


def plan_voice_agent(obs: AgentObservation, settings: OperatorSettings) -> Plan:
    try:
        spec = VoiceAgentSpec.model_validate(obs.spec)
    except ValidationError as e:
        return _invalid(obs, e)
    agent = Agent(obs.owner, spec)
    status = VoiceAgentStatus.model_validate(obs.status)
    plan = Plan()

    gateway = obs.deployments.get("gateway")
    keys_wanted = _gateway_keys(agent, status)
    keys_ready = _gateway_rolled_out(gateway)
    mounted = mounted_keys(gateway)

    steps: dict[ComponentName, RolloutStep] = {}
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
        probe_configured = spec.rollout.probe is not None
        steps[c] = next_rollout_step(
            RolloutInput(
                component=c,
                desired=desired,
                status=old,
                deployment=deployment_state(obs.deployments.get(c)),
                replicas=component_spec.replicas,
                crash_loop=crash_loop(obs.pods, c, rev) if rev else None,
                probe_passed=obs.probes.get(c) if probe_configured else None,
                probe_threshold=spec.rollout.probe.failure_threshold if spec.rollout.probe else 1,
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

    _children(plan, agent, steps, obs, keys_wanted, settings)
    gateway_state = deployment_state(gateway)
    gateway_ok = gateway_state is not None and gateway_state.available_replicas > 0
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
        conditions=_conditions(obs, status, steps, gateway_ok, model_failures),
        components=ComponentsStatus(**components),
        gateway=GatewayStatus(
            url=gateway_url(agent),
            ready_replicas=gateway_state.ready_replicas if gateway_state else 0,
        ),
        observed_generation=obs.generation,
    )
    plan.status_patch = status_patch(obs.status, new.wire())
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
