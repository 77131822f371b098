"""What each stage should run: the spec, resolved against its ModelAsset's current version
(or its vendor and key), as a ComponentRevision, or the reason it can't be built yet."""

from __future__ import annotations

from voice_contracts.layout import MODELS_MOUNT
from voice_operator.api.modelasset import FORMATS_BY_ENGINE
from voice_operator.api.voiceagent import (
    ComponentName,
    ComponentRevision,
    LlmComponent,
    SttComponent,
    TtsComponent,
)
from voice_operator.observe import AssetView, SecretPresence
from voice_operator.plan.rollout import Blocked
from voice_operator.settings import OperatorSettings


def _internal(
    component: ComponentName,
    spec: SttComponent | LlmComponent | TtsComponent,
    asset: AssetView | None,
    settings: OperatorSettings,
) -> ComponentRevision | Blocked:
    name = spec.model
    if asset is None:
        return Blocked(
            "Progressing",
            "ModelNotReady",
            f"ModelAsset {name} (spec.{component}.model) does not exist yet",
        )
    asset_spec = asset.spec
    if asset_spec is None:
        return Blocked("Degraded", "ModelInvalid", f"ModelAsset {name} has an invalid spec")
    if asset_spec.engine != component:
        return Blocked(
            "Degraded",
            "ModelKindMismatch",
            f"ModelAsset {name} is a {asset_spec.engine} model ({asset_spec.format}); "
            f"spec.{component} needs one of engine {component}, format "
            f"{' or '.join(FORMATS_BY_ENGINE[component])}",
        )
    status = asset.status
    version = next((v for v in status.versions if v.version == status.current_version), None)
    if version is None or not status.claim_name:
        failure = model_failure(asset)
        if failure:
            return Blocked("Degraded", "ModelVersionFailed", failure)
        return Blocked(
            "Progressing", "ModelNotReady", f"ModelAsset {name} has no Ready version yet"
        )
    main = version.main_file or ""
    path = f"{MODELS_MOUNT}{version.path}/{main}" if main else f"{MODELS_MOUNT}{version.path}/"
    model_format = version.format or asset_spec.format
    return ComponentRevision(
        provider="internal",
        model=name,
        model_version=version.version,
        model_format=model_format,
        model_path=path,
        claim_name=status.claim_name,
        ollama_model=asset_spec.ollama.model if asset_spec.ollama else None,
        ollama_image=(settings.ollama_image or spec.image or settings.engine_image)
        if model_format == "ollama"
        else None,
        settings=spec.settings.wire(),
        image=spec.image or settings.engine_image,
        resources=spec.resources.wire() if spec.resources else None,
        pod_annotations=dict(spec.pod_annotations or {}),
    )


def model_failure(asset: AssetView | None) -> str | None:
    """Why the asset's spec.version failed to download, if it did: agents keep serving the
    version they have, but a version bump that will never arrive is news."""
    failed = asset.failed_condition if asset else None
    if asset is None or failed is None:
        return None
    current = asset.status.current_version
    serving = f"; still serving {current}" if current else ""
    return f"ModelAsset {asset.name} version {asset.spec_version} failed ({failed.reason}){serving}"


def _external(
    component: ComponentName,
    spec: SttComponent | LlmComponent | TtsComponent,
    secret: SecretPresence | None,
) -> ComponentRevision | Blocked:
    assert spec.external is not None  # the spec's validator guarantees it
    ref = spec.external.api_key_secret_ref
    if secret is None or not secret.exists:
        return Blocked(
            "Degraded",
            "SecretNotFound",
            f"Secret {ref.name} (spec.{component}.external.apiKeySecretRef) does not exist",
        )
    if ref.key not in secret.keys:
        return Blocked(
            "Degraded",
            "SecretKeyNotFound",
            f"Secret {ref.name} has no key {ref.key} "
            f"(spec.{component}.external.apiKeySecretRef.key)",
        )
    return ComponentRevision(
        provider="external", external=spec.external.wire(), settings=spec.settings.wire()
    )


def desired_revision(
    component: ComponentName,
    spec: SttComponent | LlmComponent | TtsComponent,
    assets: dict[str, AssetView | None],
    secrets: dict[str, SecretPresence],
    settings: OperatorSettings,
) -> ComponentRevision | Blocked:
    if spec.provider == "internal":
        assert spec.model is not None
        return _internal(component, spec, assets.get(spec.model), settings)
    assert spec.external is not None
    return _external(component, spec, secrets.get(spec.external.api_key_secret_ref.name))
