"""VoiceAgent reconcile: observe the agent, its assets, Secrets (which keys exist, never
the values), children, pods and autoscalers; run the rollout probe; plan; execute."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import httpx

from voice_operator.api.voiceagent import COMPONENTS, VoiceAgentStatus
from voice_operator.controllers.execute import execute
from voice_operator.kube import Kube
from voice_operator.plan.revisions import SecretPresence
from voice_operator.plan.voiceagent import AgentObservation, deployment_state, plan_voice_agent
from voice_operator.render.meta import LABEL_AGENT, LABEL_COMPONENT, MANAGED, Owner
from voice_operator.render.voiceagent import engine_url
from voice_operator.settings import OperatorSettings
from voice_operator.workqueue import Key

log = logging.getLogger(__name__)


def references(spec: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The ModelAssets and Secrets an agent's raw spec names."""
    assets, secrets = set(), set()
    for c in COMPONENTS:
        stage = spec.get(c) or {}
        if stage.get("provider", "internal") == "internal" and stage.get("model"):
            assets.add(stage["model"])
        ref = ((stage.get("external") or {}).get("apiKeySecretRef") or {}).get("name")
        if stage.get("provider") == "external" and ref:
            secrets.add(ref)
        fallback = ((stage.get("fallback") or {}).get("apiKeySecretRef") or {}).get("name")
        if fallback:
            secrets.add(fallback)
    return assets, secrets


def secret_presence(secret: dict[str, Any] | None) -> SecretPresence:
    if secret is None:
        return SecretPresence(exists=False)
    keys = set((secret.get("data") or {}).keys()) | set((secret.get("stringData") or {}).keys())
    return SecretPresence(exists=True, keys=frozenset(keys))


def run_probes(
    agent: dict[str, Any], deployments: dict[str, dict[str, Any]]
) -> dict[str, bool | None]:
    """Probe each stage whose Deployment finished rolling out a revision not yet known good."""
    probe = ((agent.get("spec") or {}).get("rollout") or {}).get("probe")
    if not probe:
        return {}
    status = VoiceAgentStatus.model_validate(agent.get("status") or {})
    meta = agent["metadata"]
    results: dict[str, bool | None] = {}
    for c in COMPONENTS:
        state = deployment_state(deployments.get(c))
        component = getattr(status.components, c)
        good = component.last_good_revision if component else None
        if state is None or state.template_revision in (None, good):
            continue
        if not state.rolled_out(state.template_revision or ""):
            continue
        url = engine_url(meta["name"], meta["namespace"], c) + probe.get("path", "/ready")
        try:
            response = httpx.get(url, timeout=probe.get("timeoutSeconds", 5))
            results[c] = response.status_code == 200
        except httpx.HTTPError as e:
            log.info("rollout probe of %s/%s %s failed: %s", meta["name"], c, url, e)
            results[c] = False
    return results


def reconcile_voice_agent(kube: Kube, settings: OperatorSettings, key: Key) -> float | None:
    agent = kube.get("VoiceAgent", key.name, key.namespace)
    if agent is None:
        return None  # deleted: the garbage collector removes its children
    meta, ns = agent["metadata"], key.namespace
    asset_names, secret_names = references(agent.get("spec") or {})
    children = {LABEL_AGENT: key.name, **MANAGED}
    deployments = {
        d["metadata"]["labels"].get(LABEL_COMPONENT, ""): d
        for d in kube.list("Deployment", ns, labels=children)
    }
    autoscaled = frozenset(
        h["spec"]["scaleTargetRef"]["name"]
        for h in kube.list("HorizontalPodAutoscaler", ns)
        if h["spec"]["scaleTargetRef"].get("kind") == "Deployment"
    )
    observation = AgentObservation(
        owner=Owner("VoiceAgent", meta["name"], ns, meta["uid"]),
        generation=meta.get("generation", 0),
        spec=agent.get("spec") or {},
        status=agent.get("status") or {},
        assets={name: kube.get("ModelAsset", name, ns) for name in asset_names},
        secrets={name: secret_presence(kube.get("Secret", name, ns)) for name in secret_names},
        deployments=deployments,
        pods=kube.list("Pod", ns, labels=children),
        autoscaled=autoscaled,
        probes=run_probes(agent, deployments),
        now=datetime.datetime.now(datetime.UTC).replace(microsecond=0),
    )
    plan = plan_voice_agent(observation, settings)
    execute(kube, plan, agent)
    return plan.requeue_after
