"""Observed objects turned into typed values, once, before any planning.

The planners never read an object the apiserver returned: the controllers list and get,
these functions parse, and the plans see only what is here. A Secret is seen as its key
names, never its values."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from voice_operator.api.common import Condition
from voice_operator.api.modelasset import ModelAssetSpec, ModelAssetStatus
from voice_operator.api.voiceagent import COMPONENTS, VoiceAgentSpec, VoiceAgentStatus
from voice_operator.render.meta import (
    ANNOTATION_PRUNE,
    ANNOTATION_REVISION,
    LABEL_COMPONENT,
    Owner,
)


@dataclass(frozen=True)
class SecretPresence:
    """What the operator knows of a Secret: whether it exists and which keys it has
    (never the values)."""

    exists: bool
    keys: frozenset[str] = frozenset()


def secret_presence(secret: dict[str, Any] | None) -> SecretPresence:
    if secret is None:
        return SecretPresence(exists=False)
    keys = set((secret.get("data") or {}).keys()) | set((secret.get("stringData") or {}).keys())
    return SecretPresence(exists=True, keys=frozenset(keys))


@dataclass(frozen=True)
class DeploymentState:
    template_revision: str | None  # the pod template's revision annotation
    generation: int
    observed_generation: int
    replicas: int
    status_replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    deadline_exceeded: bool
    # Which Secret key each key slot (<stage>, <stage>-fallback) of the pods mounts.
    mounted_keys: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        """The newest template runs in every pod, all available; no old pod is left."""
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas == self.replicas
            and self.available_replicas >= self.replicas
            and self.status_replicas == self.replicas
        )

    def rolled_out(self, revision: str) -> bool:
        """Every pod runs `revision` and is available; no old pod is left."""
        return self.template_revision == revision and self.settled


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
        mounted_keys=_mounted_keys((spec["template"].get("spec") or {}).get("volumes") or []),
    )


def _mounted_keys(volumes: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The projected Secret items of a pod template, by key slot (the item path's head)."""
    found: dict[str, dict[str, str]] = {}
    for volume in volumes:
        for source in (volume.get("projected") or {}).get("sources", []) or []:
            secret = source.get("secret") or {}
            for item in secret.get("items", []):
                slot = item["path"].split("/")[0]
                found[slot] = {"name": secret["name"], "key": item["key"]}
    return found


@dataclass(frozen=True)
class ContainerState:
    name: str
    restarts: int
    waiting_reason: str | None


@dataclass(frozen=True)
class PodState:
    name: str
    component: str | None
    revision: str | None
    containers: tuple[ContainerState, ...]


def pod_state(pod: dict[str, Any]) -> PodState:
    meta = pod["metadata"]
    statuses = (pod.get("status") or {}).get("containerStatuses", []) or []
    return PodState(
        name=meta["name"],
        component=(meta.get("labels") or {}).get(LABEL_COMPONENT),
        revision=(meta.get("annotations") or {}).get(ANNOTATION_REVISION),
        containers=tuple(
            ContainerState(
                name=cs["name"],
                restarts=cs.get("restartCount", 0),
                waiting_reason=((cs.get("state") or {}).get("waiting") or {}).get("reason"),
            )
            for cs in statuses
        ),
    )


@dataclass(frozen=True)
class AssetView:
    """A ModelAsset as an agent's planner needs it."""

    name: str
    spec: ModelAssetSpec | None  # None: the stored spec does not validate
    status: ModelAssetStatus
    spec_version: str | None

    @property
    def failed_condition(self) -> Condition | None:
        return next(
            (c for c in self.status.conditions if c.type == "Failed" and c.status == "True"),
            None,
        )


def asset_view(asset: dict[str, Any] | None) -> AssetView | None:
    if asset is None:
        return None
    raw_spec = asset.get("spec") or {}
    try:
        spec: ModelAssetSpec | None = ModelAssetSpec.model_validate(raw_spec)
    except ValidationError:
        spec = None
    return AssetView(
        name=asset["metadata"]["name"],
        spec=spec,
        status=ModelAssetStatus.model_validate(asset.get("status") or {}),
        spec_version=raw_spec.get("version"),
    )


def autoscaled(hpas: Iterable[dict[str, Any]]) -> frozenset[str]:
    """Names of the Deployments an HPA scales (their replicas are left to it)."""
    return frozenset(
        h["spec"]["scaleTargetRef"]["name"]
        for h in hpas
        if h["spec"]["scaleTargetRef"].get("kind") == "Deployment"
    )


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one rollout probe attempt of a stage's revision."""

    revision: str
    passed: bool


@dataclass(frozen=True)
class AgentObservation:
    owner: Owner
    generation: int
    spec: VoiceAgentSpec | ValidationError  # the error when the stored spec is invalid
    status: VoiceAgentStatus
    assets: dict[str, AssetView | None]  # the ModelAssets the spec names
    secrets: dict[str, SecretPresence]  # the Secrets the spec names
    deployments: dict[str, DeploymentState]  # by part: stt, llm, tts, gateway
    pods: list[PodState]
    autoscaled: frozenset[str]  # Deployment names an HPA scales
    probes: dict[str, ProbeResult]  # stage -> a probe attempt finished since last time
    now: datetime.datetime


def observe_agent(
    *,
    owner: Owner,
    generation: int,
    spec: dict[str, Any],
    status: dict[str, Any],
    assets: dict[str, dict[str, Any] | None],
    secrets: dict[str, SecretPresence],
    deployments: dict[str, dict[str, Any]],
    pods: list[dict[str, Any]],
    autoscaled: frozenset[str],
    probes: dict[str, ProbeResult],
    now: datetime.datetime,
) -> AgentObservation:
    """The typed observation of one VoiceAgent from what the controller read."""
    try:
        parsed: VoiceAgentSpec | ValidationError = VoiceAgentSpec.model_validate(spec)
    except ValidationError as error:
        parsed = error
    states = {part: deployment_state(d) for part, d in deployments.items()}
    return AgentObservation(
        owner=owner,
        generation=generation,
        spec=parsed,
        status=VoiceAgentStatus.model_validate(status),
        assets={name: asset_view(a) for name, a in assets.items()},
        secrets=secrets,
        deployments={part: s for part, s in states.items() if s is not None},
        pods=[pod_state(p) for p in pods],
        autoscaled=autoscaled,
        probes=probes,
        now=now,
    )


def references(spec: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The ModelAssets and Secrets an agent's raw spec names (an invalid spec too, so its
    agent wakes when they appear)."""
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


@dataclass(frozen=True)
class JobCondition:
    reason: str
    message: str
    at: datetime.datetime | None


@dataclass(frozen=True)
class JobState:
    """A download or prune Job of an asset."""

    name: str
    component: str | None  # fetch or prune
    created: datetime.datetime | None
    complete: JobCondition | None
    failed: JobCondition | None
    prune_targets: frozenset[str]  # the versions a prune Job deletes


def _time(value: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _job_condition(job: dict[str, Any], type_: str) -> JobCondition | None:
    for c in (job.get("status") or {}).get("conditions", []) or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return JobCondition(
                c.get("reason", ""), c.get("message", ""), _time(c.get("lastTransitionTime"))
            )
    return None


def job_state(job: dict[str, Any]) -> JobState:
    meta = job["metadata"]
    targets = (meta.get("annotations") or {}).get(ANNOTATION_PRUNE, "")
    return JobState(
        name=meta["name"],
        component=(meta.get("labels") or {}).get(LABEL_COMPONENT),
        created=_time(meta.get("creationTimestamp")),
        complete=_job_condition(job, "Complete"),
        failed=_job_condition(job, "Failed"),
        prune_targets=frozenset(v for v in targets.split(",") if v),
    )


@dataclass(frozen=True)
class AssetObservation:
    owner: Owner
    generation: int
    spec: ModelAssetSpec | ValidationError  # the error when the stored spec is invalid
    status: ModelAssetStatus
    jobs: list[JobState]
    versions_in_use: frozenset[str]  # versions some VoiceAgent serves or rolls out to
    now: datetime.datetime
    users: tuple[str, ...] = ()  # agents that name it or serve from it
    deleting: bool = False
    finalizers: tuple[str, ...] = ()
    resource_version: str = ""


def observe_asset(
    *,
    owner: Owner,
    generation: int,
    spec: dict[str, Any],
    status: dict[str, Any],
    jobs: list[dict[str, Any]],
    versions_in_use: frozenset[str],
    now: datetime.datetime,
    users: tuple[str, ...] = (),
    metadata: dict[str, Any] | None = None,
) -> AssetObservation:
    """The typed observation of one ModelAsset from what the controller read."""
    try:
        parsed: ModelAssetSpec | ValidationError = ModelAssetSpec.model_validate(spec)
    except ValidationError as error:
        parsed = error
    return AssetObservation(
        owner=owner,
        generation=generation,
        spec=parsed,
        status=ModelAssetStatus.model_validate(status),
        jobs=[job_state(j) for j in jobs],
        versions_in_use=versions_in_use,
        now=now,
        users=users,
        deleting=bool((metadata or {}).get("deletionTimestamp")),
        finalizers=tuple((metadata or {}).get("finalizers") or ()),
        resource_version=(metadata or {}).get("resourceVersion", ""),
    )
