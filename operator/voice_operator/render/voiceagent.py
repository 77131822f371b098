"""Desired children of a VoiceAgent: per internal stage an engine Deployment and Service,
the gateway Deployment and Service, and the routes ConfigMap the gateway reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voice_contracts import routes as wire
from voice_contracts.env import GatewayEnv, LlmEnv, SttEnv, TtsEnv, env_vars
from voice_contracts.layout import (
    AUTH_DIR,
    KEY_DIR,
    MODELS_MOUNT,
    PORT,
    ROUTES_DIR,
    ROUTES_FILE,
    ROUTES_PATH,
    key_item_path,
    key_path,
)
from voice_operator.api.voiceagent import (
    ComponentName,
    ComponentRevision,
    GatewaySpec,
    LlmSpecSettings,
    SttSpecSettings,
    TtsSpecSettings,
    VoiceAgentSpec,
)
from voice_operator.hashing import revision_hash
from voice_operator.render import render
from voice_operator.render.meta import (
    ANNOTATION_REVISION,
    LABEL_AGENT,
    LABEL_MODEL_VERSION,
    PROMETHEUS_SCRAPE,
    Owned,
    labels,
    pod_values,
)
from voice_operator.settings import OperatorSettings

COMMANDS: dict[str, str] = {"stt": "voice-stt", "llm": "voice-llm", "tts": "voice-tts"}
# The LLM engine in front of an Ollama sidecar only relays: the stage's resources go to the
# sidecar, which runs the model.
OLLAMA_PROXY_REQUESTS = {"cpu": "50m", "memory": "128Mi"}
DEFAULT_REQUESTS: dict[str, dict[str, str]] = {
    "stt": {"cpu": "1", "memory": "1Gi"},
    "llm": {"cpu": "2", "memory": "2Gi"},
    "tts": {"cpu": "500m", "memory": "512Mi"},
    "gateway": {"cpu": "200m", "memory": "256Mi"},
}
OLLAMA_ADDRESS = "127.0.0.1:11434"


@dataclass(frozen=True)
class Agent(Owned):
    spec: VoiceAgentSpec


# A pod being replaced keeps answering while every kube-proxy and client stops sending it
# new connections (endpoint removal is asynchronous to SIGTERM); then it drains.
PRE_STOP_SECONDS = 5


def child_name(agent_name: str, part: str) -> str:
    """<agent>-stt, <agent>-gateway, <agent>-routes."""
    return f"{agent_name}-{part}"


def selector(agent: Agent, part: str) -> dict[str, str]:
    """The immutable part of the labels: what a Deployment and its Service select on."""
    return {
        "app.kubernetes.io/instance": agent.name,
        "app.kubernetes.io/component": part,
        LABEL_AGENT: agent.name,
    }


def _meta(agent: Agent, part: str, app: str) -> dict[str, Any]:
    return {
        "name": child_name(agent.name, part),
        "namespace": agent.namespace,
        "labels": labels(app, agent.name, part, **{LABEL_AGENT: agent.name}),
        "owner_references": [agent.owner.reference()],
    }


def engine_url(agent_name: str, namespace: str, component: str) -> str:
    return f"http://{child_name(agent_name, component)}.{namespace}.svc:{PORT}"


def gateway_url(agent: Agent) -> str:
    port = agent.spec.gateway.service.port
    return f"http://{child_name(agent.name, 'gateway')}.{agent.namespace}.svc:{port}"


def _env(values: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": k, "value": str(v)} for k, v in values.items() if v is not None]


# whisper.cpp and llama.cpp spin their OpenMP threads at every wait by default; on a
# shared node that turned 0.5 s transcriptions into 5-10 s (docs/engines.md).
_PROCESS_ENV = {"HOME": "/tmp", "OMP_WAIT_POLICY": "PASSIVE"}


def engine_env(component: ComponentName, rev: ComponentRevision) -> list[dict[str, str]]:
    """The engine's settings, in the environment variables the engines read."""
    path = rev.model_path or ""
    if component == "stt":
        stt = SttSpecSettings.model_validate(rev.settings)
        return env_vars(
            SttEnv(
                port=PORT,
                stt_backend="faster-whisper" if rev.model_format == "ct2" else "whispercpp",
                stt_model_path=path,
                stt_model_name=rev.model or "",
                stt_threads=stt.threads,
                stt_temperature=stt.temperature,
                stt_language=stt.language,
                stt_device=stt.device,
            ),
            **_PROCESS_ENV,
        )
    if component == "tts":
        tts = TtsSpecSettings.model_validate(rev.settings)
        return env_vars(
            TtsEnv(
                port=PORT, tts_voice_path=path, tts_voice_name=rev.model or "", tts_speed=tts.speed
            ),
            **_PROCESS_ENV,
        )
    llm = LlmSpecSettings.model_validate(rev.settings)
    if rev.model_format == "ollama":
        env = LlmEnv(
            port=PORT,
            llm_backend="ollama",
            llm_model=rev.ollama_model or "",
            ollama_base_url=f"http://{OLLAMA_ADDRESS}",
            llm_max_tokens=llm.max_tokens,
            llm_temperature=llm.temperature,
            llm_context=llm.context_size,
            llm_system_prompt=llm.system_prompt,
        )
    else:
        env = LlmEnv(
            port=PORT,
            llm_backend="llamacpp",
            llm_model_path=path,
            llm_model=rev.model or "",
            llm_max_tokens=llm.max_tokens,
            llm_temperature=llm.temperature,
            llm_context=llm.context_size,
            llm_system_prompt=llm.system_prompt,
            llm_device=llm.device,
            llm_gpu_layers=llm.gpu_layers,
        )
    return env_vars(env, **_PROCESS_ENV)


def _resources(rev_resources: dict[str, Any] | None, part: str) -> dict[str, Any]:
    return rev_resources or {"requests": DEFAULT_REQUESTS[part]}


def desired_engine_deployment(
    agent: Agent,
    component: ComponentName,
    rev: ComponentRevision,
    replicas: int | None,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The engine of an internal stage, running `rev`. `replicas` None leaves the field to
    whoever else owns it (an HPA)."""
    assert rev.provider == "internal"
    revision = rev.revision
    mounts = [
        {"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    ollama = rev.model_format == "ollama"
    containers: list[dict[str, Any]] = [
        {
            "name": component,
            "image": rev.image,
            "command": [COMMANDS[component]],
            "env": engine_env(component, rev),
            "ports": [{"name": "http", "containerPort": PORT}],
            "resources": {"requests": OLLAMA_PROXY_REQUESTS}
            if ollama
            else _resources(rev.resources, component),
            "volume_mounts": mounts,
            "probes": True,
            # Started = the model is loaded; loading a large one can take minutes (10 allowed).
            "startup_path": "/ready",
            "startup_failure_threshold": 120,
        }
    ]
    if ollama:
        folder = (rev.model_path or "").rstrip("/")
        containers.append(
            {
                "name": "ollama",
                "image": rev.ollama_image,
                "command": ["ollama", "serve"],
                "env": _env(
                    {
                        "OLLAMA_MODELS": folder,
                        "OLLAMA_HOST": OLLAMA_ADDRESS,
                        "OLLAMA_NOPRUNE": "1",
                        "HOME": "/tmp",
                    }
                ),
                "ports": [],
                "resources": _resources(rev.resources, component),
                "volume_mounts": mounts,
                "probes": False,
            }
        )
    meta = _meta(agent, component, "voice-engine")
    return render(
        "deployment",
        **meta,
        pod_labels={**meta["labels"], LABEL_MODEL_VERSION: rev.model_version or ""},
        annotations={ANNOTATION_REVISION: revision},
        replicas=replicas,
        progress_deadline_seconds=agent.spec.rollout.progress_deadline_seconds,
        pre_stop_seconds=PRE_STOP_SECONDS,
        selector=selector(agent, component),
        pod_annotations={**rev.pod_annotations, ANNOTATION_REVISION: revision, **PROMETHEUS_SCRAPE},
        **pod_values(settings),
        containers=containers,
        volumes=[
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": rev.claim_name, "readOnly": True},
            },
            {"name": "tmp", "emptyDir": {}},
        ],
    )


def desired_service(
    agent: Agent, part: str, port: int = PORT, type_: str = "ClusterIP"
) -> dict[str, Any]:
    app = "voice-gateway" if part == "gateway" else "voice-engine"
    return render(
        "service", **_meta(agent, part, app), type=type_, selector=selector(agent, part), port=port
    )


_ROUTE: dict[str, type[wire.StageRoute]] = {
    "stt": wire.SttRoute,
    "llm": wire.LlmRoute,
    "tts": wire.TtsRoute,
}


def _route_settings(component: str, settings: dict[str, Any]) -> wire.RouteSettings:
    """The stage's settings as the routes file carries them."""
    if component == "stt":
        stt = SttSpecSettings.model_validate(settings)
        return wire.SttRouteSettings(
            temperature=stt.temperature, language=stt.language, threads=stt.threads
        )
    if component == "llm":
        llm = LlmSpecSettings.model_validate(settings)
        return wire.LlmRouteSettings(
            max_tokens=llm.max_tokens,
            temperature=llm.temperature,
            system_prompt=llm.system_prompt,
            context_size=llm.context_size,
        )
    return wire.TtsRouteSettings(speed=TtsSpecSettings.model_validate(settings).speed)


def _vendor(
    component: str, external: dict[str, Any], slot: str, revision: str, settings: dict[str, Any]
) -> wire.StageRoute:
    ref = external.get("apiKeySecretRef")
    return _ROUTE[component](
        provider="external",
        revision=revision,
        settings=_route_settings(component, settings),
        vendor=external.get("vendor"),
        model=external.get("model"),
        url=external.get("url"),
        voice=external.get("voice"),
        # Where the key comes from, for people reading the ConfigMap; the gateway reads
        # the file mounted from that Secret. Never the value.
        secret_ref=wire.SecretRef(name=ref["name"], key=ref["key"]) if ref else None,
        api_key_file=key_path(slot),
    )


def route(
    agent: Agent,
    component: str,
    rev: ComponentRevision | None,
    fallback: dict[str, Any] | None = None,
) -> wire.StageRoute | None:
    """One stage's entry in routes.json: where the gateway sends it (and where next, when
    that fails). Keys by file path only."""
    if rev is None:
        return None
    if rev.provider == "internal":
        entry = _ROUTE[component](
            provider="internal",
            revision=rev.revision,
            settings=_route_settings(component, rev.settings),
            url=engine_url(agent.name, agent.namespace, component),
            model=rev.model,
            model_version=rev.model_version,
        )
    else:
        entry = _vendor(component, rev.external or {}, component, rev.revision, rev.settings)
    if fallback is not None:
        backup = _vendor(
            component, fallback, f"{component}-fallback", revision_hash(fallback), rev.settings
        )
        entry = entry.model_copy(update={"fallback": backup})
    return entry


def gateway_route(gateway: GatewaySpec) -> wire.GatewayRoute:
    """The gateway's own part of routes.json: turn detection, reloaded without a restart."""
    turns = gateway.turn_detection
    return wire.GatewayRoute(
        turn_detection=wire.TurnDetection(
            mode=turns.mode,
            silence_ms=turns.silence_ms,
            min_speech_ms=turns.min_speech_ms,
            max_utterance_ms=turns.max_utterance_ms,
            barge_in=turns.barge_in,
            interim_ms=turns.interim_ms,
        )
    )


def desired_routes(
    agent: Agent,
    routes: dict[str, ComponentRevision | None],
    fallbacks: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    fallbacks = fallbacks or {}
    document = wire.Routes(
        agent=agent.name,
        namespace=agent.namespace,
        stages=wire.Stages.model_validate(
            {c: route(agent, c, rev, fallbacks.get(c)) for c, rev in routes.items()}
        ),
        gateway=gateway_route(agent.spec.gateway),
    )
    return render(
        "configmap", **_meta(agent, "routes", "voice-gateway"), data={ROUTES_FILE: document.text()}
    )


def key_sources(keys: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Projected-volume sources putting each vendor key at <stage>/api-key (or
    <stage>-fallback/api-key).

    Optional, so a Secret created later does not keep the gateway from starting; the route
    only moves to a vendor once its key is there.
    """
    return [
        {
            "secret": {
                "name": ref["name"],
                "optional": True,
                "items": [{"key": ref["key"], "path": key_item_path(component)}],
            }
        }
        for component, ref in sorted(keys.items())
    ]


def _gateway_access_env(gateway: GatewaySpec) -> dict[str, Any]:
    """Auth and CORS variables, only where the spec asks for them: an agent without them
    keeps the gateway template it had."""
    env: dict[str, Any] = {}
    if gateway.auth is not None:
        env["gateway_auth_keys_dir"] = AUTH_DIR
        env["gateway_token_ttl"] = gateway.token_ttl_seconds
    if gateway.cors_origins:
        env["gateway_cors_origins"] = ",".join(gateway.cors_origins)
    return env


def desired_gateway_deployment(
    agent: Agent, keys: dict[str, dict[str, str]], replicas: int | None, settings: OperatorSettings
) -> dict[str, Any]:
    gateway = agent.spec.gateway
    mounts = [
        {"name": "routes", "mountPath": ROUTES_DIR, "readOnly": True},
        {"name": "keys", "mountPath": KEY_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "routes", "configMap": {"name": child_name(agent.name, "routes")}},
        {"name": "keys", "projected": {"sources": key_sources(keys)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if gateway.auth is not None:
        # The whole Secret, by reference: a key added or rotated reaches the gateway with
        # kubelet's next refresh. Optional, so a missing Secret leaves the gateway up and
        # refusing every client (no keys) rather than stuck in ContainerCreating.
        mounts.append({"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})
        volumes.append(
            {"name": "auth", "secret": {"secretName": gateway.auth.secret_name, "optional": True}}
        )
    container = {
        "name": "gateway",
        "image": gateway.image or settings.engine_image,
        "command": ["voice-gateway"],
        "env": env_vars(
            GatewayEnv(
                port=PORT,
                gateway_agent=agent.name,
                gateway_routes_path=ROUTES_PATH,
                **_gateway_access_env(gateway),
            ),
            HOME="/tmp",
        ),
        "ports": [{"name": "http", "containerPort": PORT}],
        "resources": gateway.resources.wire()
        if gateway.resources
        else {"requests": DEFAULT_REQUESTS["gateway"]},
        "volume_mounts": mounts,
        "probes": True,
        # Started = the process serves. Ready waits for a route per stage, which can take
        # as long as the engines' model loading plus a kubelet refresh of the routes file:
        # a startup probe on /ready would restart a healthy gateway meanwhile.
        "startup_path": "/health",
        "startup_failure_threshold": 24,
    }
    meta = _meta(agent, "gateway", "voice-gateway")
    return render(
        "deployment",
        **meta,
        pod_labels=meta["labels"],
        annotations={},
        replicas=replicas,
        progress_deadline_seconds=agent.spec.rollout.progress_deadline_seconds,
        pre_stop_seconds=PRE_STOP_SECONDS,
        selector=selector(agent, "gateway"),
        pod_annotations={**(gateway.pod_annotations or {}), **PROMETHEUS_SCRAPE},
        **pod_values(settings),
        containers=[container],
        volumes=volumes,
    )
