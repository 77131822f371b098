"""VoiceAgent: one resource = STT + LLM + TTS + a gateway that runs a conversation turn."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator
from pydantic.json_schema import JsonDict

from voice_contracts.env import Device
from voice_operator.api.common import (
    DNS_1035_LABEL,
    DNS_SUBDOMAIN,
    GATEWAY_POD_ANNOTATIONS_MAX_BYTES,
    STAGE_ANNOTATIONS_WHY,
    ApiModel,
    Condition,
    GatewayPodAnnotations,
    PodAnnotations,
    ResourceRequirements,
    SecretKeyRef,
    StatusModel,
    cel,
    object_name_schema,
    pod_annotations_field,
    validations,
)
from voice_operator.api.modelasset import MAX_NAME_LENGTH as MAX_ASSET_NAME_LENGTH
from voice_operator.hashing import revision_hash

Provider = Literal["internal", "external"]
ComponentName = Literal["stt", "llm", "tts"]
COMPONENTS: tuple[ComponentName, ...] = ("stt", "llm", "tts")

IMAGE = r"^[^\s]+$"
# scheme://host[:port], as a browser sends it in Origin.
Origin = Annotated[str, StringConstraints(pattern=r"^https?://[^/\s,]+$", max_length=255)]
BASE_URL = r"^https?://[^\s]+$"

# The longest name the operator derives from an agent's is its gateway's Deployment and
# Service, <name>-gateway, and a Service name is a DNS-1035 label of at most 63 characters.
MAX_NAME_LENGTH = 63 - len("-gateway")
NAME_SCHEMA = object_name_schema(
    MAX_NAME_LENGTH,
    "the agent's Services are named <name>-stt, -llm, -tts and -gateway, and a Service "
    "name has at most 63 characters",
)


class ExternalBase(ApiModel):
    """A hosted vendor API; the key is read from a Secret, never copied."""

    model: str | None = Field(
        default=None,
        description="The vendor's model name (vendor default if unset).",
        max_length=255,
    )
    url: str | None = Field(
        default=None,
        description="Base URL override, e.g. a self-hosted OpenAI-compatible server.",
        max_length=2048,
        pattern=BASE_URL,
    )
    api_key_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the API key. Mounted into the gateway; never copied "
        "into ConfigMaps, status, events or logs."
    )


class SttExternal(ExternalBase):
    vendor: Literal["deepgram", "openai"] = Field(
        description="deepgram (pre-recorded API) or openai (any OpenAI-compatible "
        "/v1/audio/transcriptions, e.g. Groq)."
    )


class LlmExternal(ExternalBase):
    vendor: Literal["openai", "groq"] = Field(
        description="Any OpenAI-compatible chat API: openai, groq (or a custom url)."
    )


class TtsExternal(ExternalBase):
    vendor: Literal["elevenlabs", "openai"] = Field(
        description="elevenlabs (text-to-speech API) or openai (/v1/audio/speech)."
    )
    voice: str | None = Field(default=None, description="The vendor's voice id.", max_length=255)


class SttSpecSettings(ApiModel):
    """whisper.cpp / faster-whisper settings."""

    threads: int = Field(default=2, ge=1, le=64, description="Inference threads per request.")
    temperature: float = Field(default=0.0, ge=0.0, le=1.0, description="Decoding temperature.")
    language: str = Field(
        default="en",
        description="Spoken language (ISO 639-1).",
        max_length=3,
        pattern=r"^[a-z]{2,3}$",
    )
    device: Device | None = Field(
        default=None,
        description="auto (when unset): CUDA where the engine's library has it and the pod "
        "sees a GPU (request nvidia.com/gpu in resources), else the CPU; cuda: the GPU or the "
        "model fails to load; cpu: never the GPU.",
    )


class LlmSpecSettings(ApiModel):
    """LLM generation settings."""

    max_tokens: int = Field(default=256, ge=1, le=8192, description="Reply length cap.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Sampling temperature.")
    context_size: int = Field(
        default=2048, ge=256, le=131072, description="Context window (llama.cpp)."
    )
    system_prompt: str | None = Field(
        default=None, description="System prompt of every conversation.", max_length=8192
    )
    device: Device | None = Field(
        default=None,
        description="llama.cpp: auto (when unset), cpu or cuda, as for stt. Ollama uses a GPU "
        "by itself when its pod sees one.",
    )
    gpu_layers: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="llama.cpp on CUDA: how many of the model's layers run on the GPU "
        "(unset: all).",
    )


class TtsSpecSettings(ApiModel):
    """Piper settings."""

    speed: float = Field(default=1.0, ge=0.25, le=4.0, description="Speaking rate (1 = voice's).")


def _provider_rules(component: str) -> JsonDict:
    return validations(
        cel(
            "self.provider != 'internal' || has(self.model)",
            f"an internal provider needs spec.{component}.model (a ModelAsset name)",
            field_path=".model",
        ),
        cel(
            "self.provider != 'external' || has(self.external)",
            f"an external provider needs spec.{component}.external (vendor and apiKeySecretRef)",
            field_path=".external",
        ),
    )


class ComponentBase(ApiModel):
    """What every stage has in common."""

    provider: Provider = Field(
        default="internal",
        description="internal: our engine runs in the cluster on a ModelAsset; external: a "
        "vendor API.",
    )
    model: str | None = Field(
        default=None,
        description="ModelAsset (same namespace) the internal engine serves.",
        max_length=MAX_ASSET_NAME_LENGTH,
        pattern=DNS_1035_LABEL,
    )
    replicas: int = Field(default=1, ge=0, le=100, description="Engine pods (internal).")
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Engine container resources (internal). For an Ollama model they go to "
        "the Ollama server's container, which runs the model.",
    )
    image: str | None = Field(
        default=None,
        description="Engine image override (default: the operator's engine image).",
        max_length=512,
        pattern=IMAGE,
    )
    pod_annotations: PodAnnotations = pod_annotations_field(
        "Annotations of the engine pods (e.g. for a service mesh). Changing them rolls out a "
        "new revision.",
        why=STAGE_ANNOTATIONS_WHY,
    )

    @model_validator(mode="after")
    def _provider_needs(self) -> ComponentBase:
        if self.provider == "internal" and not self.model:
            raise ValueError("an internal provider needs model (a ModelAsset name)")
        if self.provider == "external" and getattr(self, "external", None) is None:
            raise ValueError("an external provider needs external (vendor and apiKeySecretRef)")
        return self


class SttComponent(ComponentBase):
    """Speech to text."""

    settings: SttSpecSettings = Field(
        default_factory=SttSpecSettings, description="Engine settings."
    )
    external: SttExternal | None = Field(default=None, description="Vendor settings (external).")
    fallback: SttExternal | None = Field(
        default=None,
        description="A vendor the gateway turns to when this stage's provider fails before "
        "answering (down, timeout, 5xx, 429). Used only once its key's Secret exists.",
    )

    model_config = {"json_schema_extra": _provider_rules("stt")}


class LlmComponent(ComponentBase):
    """The language model."""

    settings: LlmSpecSettings = Field(
        default_factory=LlmSpecSettings, description="Engine settings."
    )
    external: LlmExternal | None = Field(default=None, description="Vendor settings (external).")
    fallback: LlmExternal | None = Field(
        default=None,
        description="A vendor the gateway turns to when this stage's provider fails before "
        "answering (down, timeout, 5xx, 429). Used only once its key's Secret exists.",
    )

    model_config = {"json_schema_extra": _provider_rules("llm")}


class TtsComponent(ComponentBase):
    """Text to speech."""

    settings: TtsSpecSettings = Field(
        default_factory=TtsSpecSettings, description="Engine settings."
    )
    external: TtsExternal | None = Field(default=None, description="Vendor settings (external).")
    fallback: TtsExternal | None = Field(
        default=None,
        description="A vendor the gateway turns to when this stage's provider fails before "
        "answering (down, timeout, 5xx, 429). Used only once its key's Secret exists.",
    )

    model_config = {"json_schema_extra": _provider_rules("tts")}


class ServiceSpec(ApiModel):
    """How the gateway is exposed."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Service port.")


class TurnDetectionSpec(ApiModel):
    """How the gateway's WebSocket finds the end of what the user says."""

    mode: Literal["vad", "manual"] = Field(
        default="vad",
        description="vad: voice activity detection (Silero VAD) on the incoming audio ends "
        "each utterance and lets the user interrupt the reply; manual: the client sends "
        '{"type": "end"} after each utterance.',
    )
    silence_ms: int = Field(
        default=500, ge=100, le=5000, description="Silence after speech that ends the utterance."
    )
    min_speech_ms: int = Field(
        default=250,
        ge=50,
        le=5000,
        description="Speech shorter than this (a cough, a click) is noise: it neither makes a "
        "turn nor interrupts the reply.",
    )
    max_utterance_ms: int = Field(
        default=30000, ge=1000, le=120000, description="An utterance is cut at this length."
    )
    barge_in: bool = Field(
        default=True,
        description="Speech of at least minSpeechMs while the agent speaks stops the reply "
        "(speech and the language model's generation).",
    )
    interim_ms: int = Field(
        default=600,
        ge=0,
        le=10000,
        description="Interim transcripts while the user speaks, at most one per this much "
        "audio (0: none). Each is a decode by the STT stage.",
    )


class GatewayAuthSpec(ApiModel):
    """API keys the gateway's clients must present."""

    secret_name: str = Field(
        description="A Secret (same namespace) whose every data entry is one API key. Mounted "
        "into the gateway; never copied into ConfigMaps, status, events or logs.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )


class GatewaySpec(ApiModel):
    """The gateway that runs a turn: audio in, transcript, reply text and audio out."""

    replicas: int = Field(default=1, ge=0, le=100, description="Gateway pods.")
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="Gateway Service.")
    turn_detection: TurnDetectionSpec = Field(
        default_factory=TurnDetectionSpec, description="End of utterance and barge-in."
    )
    auth: GatewayAuthSpec | None = Field(
        default=None,
        description="Bearer API keys for every request but the probes (required when the "
        "Service is not ClusterIP). Browsers get short-lived tokens from POST /v1/token.",
    )
    token_ttl_seconds: int = Field(
        default=300, ge=10, le=86400, description="Lifetime of the tokens of POST /v1/token."
    )
    cors_origins: list[Origin] = Field(
        default_factory=list,
        description="Origins browsers may call the gateway from (CORS and the WebSocket's "
        "Origin), e.g. https://app.example.com. Same-origin requests need no entry.",
        max_length=32,
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Gateway container resources."
    )
    image: str | None = Field(
        default=None, description="Gateway image override.", max_length=512, pattern=IMAGE
    )
    pod_annotations: GatewayPodAnnotations = pod_annotations_field(
        "Annotations of the gateway pods (e.g. for a service mesh). Changing them rolls the "
        "gateway's pods.",
        GATEWAY_POD_ANNOTATIONS_MAX_BYTES,
    )

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.service) || !has(self.service.type) || "
                "self.service.type == 'ClusterIP' || has(self.auth)",
                "spec.gateway.auth is required when spec.gateway.service.type is not "
                "ClusterIP: an exposed gateway would be an open proxy to its engines and keys",
                field_path=".auth",
            )
        )
    }

    @model_validator(mode="after")
    def _exposed_needs_auth(self) -> GatewaySpec:
        if self.service.type != "ClusterIP" and self.auth is None:
            raise ValueError(
                "spec.gateway.auth is required when spec.gateway.service.type is not ClusterIP"
            )
        return self


class ProbeSpec(ApiModel):
    """An extra check a new revision must pass before it serves."""

    path: str = Field(
        default="/ready",
        description="HTTP path on the engine's Service.",
        max_length=1024,
        pattern=r"^/[^\s]*$",
    )
    timeout_seconds: int = Field(default=5, ge=1, le=300, description="Per attempt.")
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="Failed attempts before the revision fails."
    )


class RolloutSpec(ApiModel):
    """How changes roll out and when they roll back."""

    progress_deadline_seconds: int = Field(
        default=600,
        ge=10,
        le=86400,
        description="A new revision not Available within this time has failed.",
    )
    auto_rollback: bool = Field(
        default=True,
        description="Go back to the last good revision when a new one fails (the spec is "
        "never rewritten).",
    )
    probe: ProbeSpec | None = Field(
        default=None, description="Optional extra check of a new revision before it serves."
    )


class VoiceAgentSpec(ApiModel):
    """A whole voice agent."""

    stt: SttComponent = Field(description="Speech-to-text stage.")
    llm: LlmComponent = Field(description="Language-model stage.")
    tts: TtsComponent = Field(description="Text-to-speech stage.")
    gateway: GatewaySpec = Field(default_factory=GatewaySpec, description="The turn gateway.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="Rollout policy.")

    def component(self, name: ComponentName) -> SttComponent | LlmComponent | TtsComponent:
        return getattr(self, name)


class ComponentRevision(StatusModel):
    """Everything a stage's pods and route are made from; its hash is the revision."""

    provider: Provider = Field(description="internal or external.")
    model: str | None = Field(default=None, description="ModelAsset (internal).")
    model_version: str | None = Field(default=None, description="Its version (internal).")
    model_format: str | None = Field(default=None, description="Its format (internal).")
    model_path: str | None = Field(
        default=None, description="What the engine loads, inside the asset's volume."
    )
    claim_name: str | None = Field(default=None, description="The asset's PVC (internal).")
    ollama_model: str | None = Field(default=None, description="Ollama model tag (ollama).")
    ollama_image: str | None = Field(default=None, description="Ollama server image (ollama).")
    settings: dict[str, Any] = Field(default_factory=dict, description="Engine settings.")
    image: str | None = Field(default=None, description="Engine image (internal).")
    resources: dict[str, Any] | None = Field(default=None, description="Container resources.")
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Pod annotations (internal)."
    )
    external: dict[str, Any] | None = Field(
        default=None, description="Vendor, model, url and key reference (external)."
    )

    @property
    def revision(self) -> str:
        return revision_hash(self.wire())


class RevisionRecord(StatusModel):
    """One revision a component ran or tried, kept in a bounded history."""

    revision: str = Field(description="The revision.")
    provider: Provider = Field(description="internal or external.")
    model_version: str | None = Field(default=None, description="Model version (internal).")
    result: Literal["Serving", "Superseded", "Failed"] = Field(
        description="Serving now, Superseded by a later one, or Failed to become healthy."
    )
    reason: str | None = Field(default=None, description="Why it failed.")
    at: datetime | None = Field(default=None, description="When it got this result.")


class FailedRollout(StatusModel):
    """A revision that did not become healthy; not retried until the spec changes."""

    revision: str = Field(description="The revision that failed.")
    generation: int = Field(description="The agent's .metadata.generation when it failed.")
    reason: str = Field(description="ProgressDeadlineExceeded, CrashLoop, ProbeFailed, ...")
    message: str = Field(default="", description="Details.")
    rolled_back: bool = Field(default=False, description="Whether we went back to last good.")
    at: datetime | None = Field(default=None, description="When it failed.")


class ComponentStatus(StatusModel):
    """What one stage runs now, and what it is rolling out."""

    provider: Provider | None = Field(default=None, description="Provider now serving.")
    model: str | None = Field(default=None, description="ModelAsset serving (internal).")
    model_version: str | None = Field(default=None, description="Its version now serving.")
    revision: str | None = Field(default=None, description="Revision now serving.")
    desired_revision: str | None = Field(
        default=None, description="Revision the spec asks for (differs while rolling out)."
    )
    last_good_revision: str | None = Field(
        default=None, description="The last revision that became healthy."
    )
    last_good: ComponentRevision | None = Field(
        default=None, description="What the last good revision is made of (for rollback)."
    )
    failed: FailedRollout | None = Field(
        default=None, description="The last revision that failed, if it is still the spec's."
    )
    ready_replicas: int = Field(default=0, description="Ready engine pods.")
    serving: str | None = Field(default=None, description="Summary for kubectl get.")
    endpoint: str | None = Field(default=None, description="Where the gateway sends this stage.")
    draining: ComponentRevision | None = Field(
        default=None,
        description="The internal revision the route just left: it keeps running until every "
        "gateway pod has had time to load the new route, then it is scaled to zero.",
    )
    route_moved_at: datetime | None = Field(
        default=None, description="When the route left the draining revision."
    )
    scaled_down_at: datetime | None = Field(
        default=None,
        description="When the internal engine was scaled to zero after a switch to external.",
    )
    scaled_down_generation: int | None = Field(
        default=None, description="The agent generation of that switch."
    )
    probe_failures: int = Field(default=0, description="Consecutive failed probes of a rollout.")
    history: list[RevisionRecord] = Field(
        default_factory=list, description="Recent revisions, newest first."
    )


class ComponentsStatus(StatusModel):
    stt: ComponentStatus | None = Field(default=None, description="Speech to text.")
    llm: ComponentStatus | None = Field(default=None, description="Language model.")
    tts: ComponentStatus | None = Field(default=None, description="Text to speech.")


class GatewayStatus(StatusModel):
    url: str | None = Field(default=None, description="In-cluster URL of the gateway.")
    ready_replicas: int = 0


class VoiceAgentStatus(StatusModel):
    """Observed state of a VoiceAgent."""

    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing, Degraded, RolledBack."
    )
    components: ComponentsStatus = Field(
        default_factory=ComponentsStatus, description="Per stage: stt, llm, tts."
    )
    gateway: GatewayStatus | None = Field(default=None, description="The gateway.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status is about."
    )
