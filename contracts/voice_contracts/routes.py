"""The routes file: where the gateway sends each stage. The operator builds it from these
models and writes it into a ConfigMap; the gateway parses it with the same models.

camelCase on the wire, like the resources it comes from. Unknown fields are ignored, so
an operator may add one before the gateway knows it; a stage the gateway does not know
is an error, because it could not serve it."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

Stage = Literal["stt", "llm", "tts"]
STAGES: tuple[Stage, ...] = ("stt", "llm", "tts")
SttVendor = Literal["deepgram", "openai"]
LlmVendor = Literal["openai", "groq"]
TtsVendor = Literal["elevenlabs", "openai"]
VENDORS: dict[Stage, tuple[str, ...]] = {
    "stt": get_args(SttVendor),
    "llm": get_args(LlmVendor),
    "tts": get_args(TtsVendor),
}
URL_PATTERN = r"^https?://\S+$"


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, extra="ignore", populate_by_name=True, frozen=True
    )


class SttRouteSettings(_Wire):
    """The stage's settings: the gateway applies them to every call of the route; the
    engine's own (threads, contextSize) are carried so the file shows the whole stage."""

    temperature: float | None = Field(None, ge=0.0, le=1.0)
    language: str | None = None
    threads: int | None = Field(None, ge=1)


class LlmRouteSettings(_Wire):
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    system_prompt: str | None = None
    context_size: int | None = Field(None, ge=1)


class TtsRouteSettings(_Wire):
    speed: float | None = Field(None, ge=0.25, le=4.0)


RouteSettings = SttRouteSettings | LlmRouteSettings | TtsRouteSettings


class SecretRef(_Wire):
    """Where a key comes from, for people reading the ConfigMap; never the value."""

    name: str
    key: str


class StageRoute(_Wire):
    """Where one stage goes. provider internal: our engine at url; external: the vendor's
    API at url (null: the vendor's own base URL) with the key from apiKeyFile or
    apiKeyEnv. The subclasses fix the stage: its vendors and its settings."""

    STAGE: ClassVar[Stage] = "stt"

    provider: Literal["internal", "external"]
    url: str | None = Field(None, pattern=URL_PATTERN)
    revision: str = ""
    model: str | None = None
    model_version: str | None = None
    vendor: str | None = None
    voice: str | None = None
    secret_ref: SecretRef | None = None
    api_key_file: str | None = None
    # An extension for runs outside a cluster: the key in an environment variable.
    api_key_env: str | None = None
    settings: RouteSettings = Field(default_factory=SttRouteSettings)
    # Tried when this route fails: same shape, no fallback of its own.
    fallback: StageRoute | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.provider == "internal" and not self.url:
            raise ValueError("an internal route needs url")
        if self.provider == "external":
            if not self.vendor:
                raise ValueError("an external route needs vendor")
            if self.vendor not in VENDORS[self.STAGE]:
                raise ValueError(
                    f"vendor {self.vendor!r} is not one of {sorted(VENDORS[self.STAGE])}"
                )
        if self.fallback is not None and self.fallback.fallback is not None:
            raise ValueError("a fallback route cannot have a fallback of its own")
        return self

    @property
    def name(self) -> str:
        """The provider label of metrics and answers: internal, or the vendor."""
        return "internal" if self.provider == "internal" else str(self.vendor)

    def candidates(self) -> list[StageRoute]:
        return [self] if self.fallback is None else [self, self.fallback]


class SttRoute(StageRoute):
    STAGE: ClassVar[Stage] = "stt"
    settings: SttRouteSettings = Field(default_factory=SttRouteSettings)
    fallback: SttRoute | None = None


class LlmRoute(StageRoute):
    STAGE: ClassVar[Stage] = "llm"
    settings: LlmRouteSettings = Field(default_factory=LlmRouteSettings)
    fallback: LlmRoute | None = None


class TtsRoute(StageRoute):
    STAGE: ClassVar[Stage] = "tts"
    settings: TtsRouteSettings = Field(default_factory=TtsRouteSettings)
    fallback: TtsRoute | None = None


class Stages(_Wire):
    model_config = ConfigDict(extra="forbid")

    stt: SttRoute | None = None
    llm: LlmRoute | None = None
    tts: TtsRoute | None = None


TurnMode = Literal["vad", "manual"]


class TurnDetection(_Wire):
    """How the gateway's WebSocket finds the end of what the user says. Absent from a
    file (an older operator's): manual, the explicit end-of-utterance message. The bounds
    are the VoiceAgent spec's."""

    mode: TurnMode = "manual"
    # Silence after speech that ends the utterance.
    silence_ms: int = Field(500, ge=100, le=5000)
    # Speech shorter than this is noise: it neither makes a turn nor interrupts a reply.
    min_speech_ms: int = Field(250, ge=50, le=5000)
    # An utterance is cut (and answered) at this length.
    max_utterance_ms: int = Field(30_000, ge=1000, le=120_000)
    # Speech of at least min_speech_ms during a reply stops the reply.
    barge_in: bool = True
    # Interim transcripts of the utterance so far, at most one per this much audio
    # (0: none).
    interim_ms: int = Field(600, ge=0, le=10_000)


class GatewayRoute(_Wire):
    """The gateway's own behaviour, reloaded with the routes."""

    turn_detection: TurnDetection = Field(default_factory=TurnDetection)


class Routes(_Wire):
    agent: str = ""
    namespace: str = ""
    stages: Stages = Field(default_factory=Stages)
    gateway: GatewayRoute = Field(default_factory=GatewayRoute)

    def route(self, stage: Stage) -> StageRoute | None:
        route: StageRoute | None = getattr(self.stages, stage)
        return route

    def document(self) -> dict[str, Any]:
        """The file's JSON value: what was set, so a stage without a route reads null."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")

    def text(self) -> str:
        return json.dumps(self.document(), indent=2, sort_keys=True)

    def summary(self) -> dict[str, Any]:
        """What the routes are, without key locations: for /v1/routes and logs."""

        def one(route: StageRoute | None) -> dict[str, Any] | None:
            if route is None:
                return None
            return {
                "provider": route.name,
                "url": route.url,
                "model": route.model,
                "revision": route.revision,
                "fallback": one(route.fallback),
            }

        return {
            "agent": self.agent,
            "namespace": self.namespace,
            "stages": {stage: one(self.route(stage)) for stage in STAGES},
        }


class RoutesError(ValueError):
    pass


def parse_routes(text: str | bytes) -> Routes:
    """The routes in `text`, or RoutesError naming each problem by its place in the file."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise RoutesError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RoutesError("not a JSON object")
    try:
        return Routes.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'routes'}: {e['msg']}" for e in exc.errors()
        )
        raise RoutesError(problems) from None
