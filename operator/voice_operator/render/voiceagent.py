"""Desired children of a VoiceAgent: per internal stage an engine Deployment and Service,
the gateway Deployment and Service, and the routes ConfigMap the gateway reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from voice_operator.api.voiceagent import ComponentName, ComponentRevision, VoiceAgentSpec
from voice_operator.render import render
from voice_operator.render.meta import (
    ANNOTATION_REVISION,
    LABEL_AGENT,
    LABEL_MODEL_VERSION,
    PROMETHEUS_SCRAPE,
    Owned,
    canonical,
    labels,
    pod_values,
    short_hash,
)
from voice_operator.settings import OperatorSettings

PORT = 8080
MODELS = "/models"
KEY_DIR = "/var/run/secrets/voiceops"
ROUTES_DIR = "/etc/voiceops/routes"
ROUTES_FILE = "routes.json"
COMMANDS: dict[str, str] = {"stt": "voice-stt", "llm": "voice-llm", "tts": "voice-tts"}
DEFAULT_REQUESTS: dict[str, dict[str, str]] = {
    "stt": {"cpu": "1", "memory": "1Gi"},
    "llm": {"cpu": "2", "memory": "2Gi"},
    "tts": {"cpu": "500m", "memory": "512Mi"},
    "gateway": {"cpu": "200m", "memory": "256Mi"},
}
BACKENDS = {
    "ggml": "whispercpp",
    "ct2": "faster-whisper",
    "gguf": "llamacpp",
    "ollama": "ollama",
    "onnx": "piper",
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


def engine_env(component: ComponentName, rev: ComponentRevision) -> list[dict[str, str]]:
    """The engine's settings, in the environment variables the engines read."""
    s = rev.settings
    # whisper.cpp and llama.cpp spin their OpenMP threads at every wait by default; on a
    # shared node that turned 0.5 s transcriptions into 5-10 s (docs/engines.md).
    common = {"PORT": PORT, "HOME": "/tmp", "OMP_WAIT_POLICY": "PASSIVE"}
    if component == "stt":
        values = {
            "STT_BACKEND": BACKENDS[rev.model_format or "ggml"],
            "STT_MODEL_PATH": rev.model_path,
            "STT_MODEL_NAME": rev.model,
            "STT_THREADS": s.get("threads"),
            "STT_TEMPERATURE": s.get("temperature"),
            "STT_LANGUAGE": s.get("language"),
        }
    elif component == "tts":
        values = {
            "TTS_VOICE_PATH": rev.model_path,
            "TTS_VOICE_NAME": rev.model,
            "TTS_SPEED": s.get("speed"),
        }
    else:
        ollama = rev.model_format == "ollama"
        values = {
            "LLM_BACKEND": BACKENDS[rev.model_format or "gguf"],
            "LLM_MODEL_PATH": None if ollama else rev.model_path,
            "LLM_MODEL": rev.ollama_model if ollama else rev.model,
            "OLLAMA_BASE_URL": f"http://{OLLAMA_ADDRESS}" if ollama else None,
            "LLM_MAX_TOKENS": s.get("maxTokens"),
            "LLM_TEMPERATURE": s.get("temperature"),
            "LLM_CONTEXT": s.get("contextSize"),
            "LLM_SYSTEM_PROMPT": s.get("systemPrompt"),
        }
    return _env({**common, **values})


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
    revision = short_hash(rev.wire())
    mounts = [
        {"name": "models", "mountPath": MODELS, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    containers: list[dict[str, Any]] = [
        {
            "name": component,
            "image": rev.image,
            "command": [COMMANDS[component]],
            "env": engine_env(component, rev),
            "ports": [{"name": "http", "containerPort": PORT}],
            "resources": _resources(rev.resources, component),
            "volume_mounts": mounts,
            "probes": True,
            # Started = the model is loaded; loading a large one can take minutes (10 allowed).
            "startup_path": "/ready",
            "startup_failure_threshold": 120,
        }
    ]
    if rev.model_format == "ollama":
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
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
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


def key_path(component: str) -> str:
    return f"{KEY_DIR}/{component}/api-key"


def _vendor(external: dict[str, Any], key_file: str) -> dict[str, Any]:
    return {
        "vendor": external.get("vendor"),
        "model": external.get("model"),
        "url": external.get("url"),
        "voice": external.get("voice"),
        # Where the key comes from, for people reading the ConfigMap; the gateway reads
        # the file mounted from that Secret. Never the value.
        "secretRef": external.get("apiKeySecretRef"),
        "apiKeyFile": key_file,
    }


def route(
    agent: Agent,
    component: str,
    rev: ComponentRevision | None,
    fallback: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """One stage's entry in routes.json: where the gateway sends it (and where next, when
    that fails). Keys by file path only."""
    if rev is None:
        return None
    base = {"provider": rev.provider, "revision": short_hash(rev.wire()), "settings": rev.settings}
    if rev.provider == "internal":
        entry = {
            **base,
            "url": engine_url(agent.name, agent.namespace, component),
            "model": rev.model,
            "modelVersion": rev.model_version,
        }
    else:
        entry = {**base, **_vendor(rev.external or {}, key_path(component))}
    if fallback is not None:
        entry["fallback"] = {
            "provider": "external",
            "revision": short_hash(fallback),
            "settings": rev.settings,
            **_vendor(fallback, key_path(f"{component}-fallback")),
        }
    return entry


def desired_routes(
    agent: Agent,
    routes: dict[str, ComponentRevision | None],
    fallbacks: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    fallbacks = fallbacks or {}
    document = {
        "agent": agent.name,
        "namespace": agent.namespace,
        "stages": {c: route(agent, c, rev, fallbacks.get(c)) for c, rev in routes.items()},
    }
    return render(
        "configmap",
        **_meta(agent, "routes", "voice-gateway"),
        data={ROUTES_FILE: json.dumps(canonical(document), indent=2, sort_keys=True)},
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
                "items": [{"key": ref["key"], "path": f"{component}/api-key"}],
            }
        }
        for component, ref in sorted(keys.items())
    ]


def desired_gateway_deployment(
    agent: Agent, keys: dict[str, dict[str, str]], replicas: int | None, settings: OperatorSettings
) -> dict[str, Any]:
    gateway = agent.spec.gateway
    mounts = [
        {"name": "routes", "mountPath": ROUTES_DIR, "readOnly": True},
        {"name": "keys", "mountPath": KEY_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    container = {
        "name": "gateway",
        "image": gateway.image or settings.engine_image,
        "command": ["voice-gateway"],
        "env": _env(
            {
                "PORT": PORT,
                "HOME": "/tmp",
                "GATEWAY_AGENT": agent.name,
                "GATEWAY_ROUTES_PATH": f"{ROUTES_DIR}/{ROUTES_FILE}",
            }
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
        pod_annotations=PROMETHEUS_SCRAPE,
        **pod_values(settings),
        containers=[container],
        volumes=[
            {"name": "routes", "configMap": {"name": child_name(agent.name, "routes")}},
            {"name": "keys", "projected": {"sources": key_sources(keys)}},
            {"name": "tmp", "emptyDir": {}},
        ],
    )


def mounted_keys(deployment: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    """Which stage keys a gateway Deployment's pod template mounts, as key_sources wrote them."""
    if deployment is None:
        return {}
    found: dict[str, dict[str, str]] = {}
    for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
        for source in (volume.get("projected") or {}).get("sources", []) or []:
            secret = source.get("secret") or {}
            for item in secret.get("items", []):
                component = item["path"].split("/")[0]
                found[component] = {"name": secret["name"], "key": item["key"]}
    return found
