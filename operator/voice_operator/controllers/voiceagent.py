"""VoiceAgent reconcile: read the agent, its assets, Secrets (which keys exist, never
the values), children, pods and autoscalers; observe (typed); plan; execute, including
the rollout probes the plan asks for."""

from __future__ import annotations

import datetime
import logging

from voice_operator.controllers.execute import execute
from voice_operator.controllers.probes import ProbeRunner
from voice_operator.kube import Kube
from voice_operator.observe import autoscaled, observe_agent, references, secret_presence
from voice_operator.plan.voiceagent import plan_voice_agent
from voice_operator.render.meta import LABEL_AGENT, LABEL_COMPONENT, MANAGED, Owner
from voice_operator.settings import OperatorSettings
from voice_operator.workqueue import Key

log = logging.getLogger(__name__)


def reconcile_voice_agent(
    kube: Kube, settings: OperatorSettings, key: Key, probes: ProbeRunner
) -> float | None:
    # Fresh, not cached: the status this reconcile builds on must include the last write.
    agent = kube.read("VoiceAgent", key.name, key.namespace)
    if agent is None:
        return None  # deleted: the garbage collector removes its children
    meta, ns = agent["metadata"], key.namespace
    asset_names, secret_names = references(agent.get("spec") or {})
    children = {LABEL_AGENT: key.name, **MANAGED}
    observation = observe_agent(
        owner=Owner("VoiceAgent", meta["name"], ns, meta["uid"]),
        generation=meta.get("generation", 0),
        spec=agent.get("spec") or {},
        status=agent.get("status") or {},
        assets={name: kube.get("ModelAsset", name, ns) for name in asset_names},
        secrets={name: secret_presence(kube.get("Secret", name, ns)) for name in secret_names},
        deployments={
            d["metadata"]["labels"].get(LABEL_COMPONENT, ""): d
            for d in kube.list("Deployment", ns, labels=children)
        },
        pods=kube.list("Pod", ns, labels=children),
        autoscaled=autoscaled(kube.list("HorizontalPodAutoscaler", ns)),
        probes=probes.take(key),
        now=datetime.datetime.now(datetime.UTC).replace(microsecond=0),
    )
    plan = plan_voice_agent(observation, settings)
    for probe in plan.probes:
        probes.request(key, probe)
    execute(kube, plan, agent)
    return plan.requeue_after
