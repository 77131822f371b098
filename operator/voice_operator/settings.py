"""The operator's own configuration, from VOICE_OPERATOR_* environment variables (the Helm
chart sets them)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_operator.api.common import DNS_SUBDOMAIN


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOICE_OPERATOR_", frozen=True)

    engine_image: str = Field(
        default="localhost/voice-engines:0.1.0",
        description="Image of the engines, the gateway and the download Jobs.",
    )
    image_pull_policy: str = Field(default="IfNotPresent")
    ollama_image: str = Field(
        default="",
        description="Ollama server image, the sidecar of LLM pods serving format ollama. "
        "Empty: the stage's engine image, which carries the project's own Ollama build.",
    )
    engine_node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="nodeSelector for every pod the operator creates (JSON).",
    )
    engine_tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Tolerations for every pod the operator creates (JSON).",
    )
    image_pull_secrets: list[Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]] = Field(
        default_factory=list,
        description="Names of Secrets every pod the operator creates pulls its images with "
        "(JSON list; each must exist in the pod's namespace).",
    )
    workers: int = Field(default=4, ge=1, le=64, description="Concurrent reconciles.")
    resync_seconds: float = Field(
        default=300.0, ge=5.0, description="Every object is reconciled at least this often."
    )
    report_timeout_seconds: float = Field(
        default=300.0,
        description="How long a download Job may be complete without the fetcher's report "
        "before the version counts as failed.",
    )
    scale_down_grace_seconds: float = Field(
        default=600.0,
        description="How long an internal engine is kept at zero replicas after a switch to "
        "an external provider, for a fast switch back.",
    )
    route_settle_seconds: float = Field(
        default=90.0,
        ge=0.0,
        description="After a route moves away from an internal engine, how long the engine "
        "keeps serving before it is scaled to zero: the kubelet refreshes the gateway's "
        "mounted routes file within about a minute, and turns in flight must finish.",
    )
    history_limit: int = Field(default=10, ge=1, le=100, description="Revisions kept per stage.")
