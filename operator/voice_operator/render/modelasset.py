"""Desired children of a ModelAsset: its PVC, the download Job per version with the
least-privilege identity it reports with, and the Job that deletes pruned versions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voice_contracts.fetch import PERMANENT_EXIT_CODES, FetchSpec, FileSpec, env_name, job_env
from voice_contracts.layout import MODELS_MOUNT, version_path
from voice_operator import API_VERSION
from voice_operator.api.modelasset import ModelAssetSpec
from voice_operator.hashing import short_hash
from voice_operator.render import render
from voice_operator.render.meta import (
    ANNOTATION_PRUNE,
    ANNOTATION_SPEC_HASH,
    LABEL_ASSET,
    LABEL_VERSION,
    Owned,
    labels,
    pod_values,
)
from voice_operator.settings import OperatorSettings

# Finished prune Jobs stay a while for `kubectl describe`; the TTL controller removes them.
PRUNE_JOB_TTL_SECONDS = 3600


@dataclass(frozen=True)
class Asset(Owned):
    spec: ModelAssetSpec


def claim_name(asset: Asset) -> str:
    return asset.spec.storage.existing_claim or f"{asset.name}-models"


def source_hash(spec: ModelAssetSpec) -> str:
    """Identifies what spec.version is made of; a version label may not change its files."""
    files = [f.wire() for f in spec.files or []]
    ollama = spec.ollama.wire() if spec.ollama else None
    return short_hash({"version": spec.version, "files": files, "ollama": ollama}, 8)


def fetch_job_name(asset: Asset) -> str:
    """One Job per (files, volume size): a version that failed for want of space is
    downloaded again once the volume is grown, as a changed spec would be."""
    attempt = {"source": source_hash(asset.spec), "size": str(asset.spec.storage.size)}
    return f"{asset.name}-fetch-{short_hash(attempt, 8)}"


def fetch_identity_name(asset: Asset) -> str:
    return f"{asset.name}-fetch"


def _meta(asset: Asset, name: str, component: str, **extra: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": asset.namespace,
        "labels": labels(
            "model-asset", asset.name, component, **{LABEL_ASSET: asset.name}, **extra
        ),
        "owner_references": [asset.owner.reference()],
    }


def desired_claim(asset: Asset) -> dict[str, Any] | None:
    """The PVC, unless the asset uses an existing one."""
    storage = asset.spec.storage
    if storage.existing_claim:
        return None
    meta = _meta(asset, claim_name(asset), "storage")
    if storage.retain_on_delete:
        meta["owner_references"] = []
    return render(
        "persistentvolumeclaim",
        **meta,
        access_modes=list(storage.access_modes),
        size=str(storage.size),
        storage_class_name=storage.storage_class_name,
    )


def desired_fetch_identity(asset: Asset) -> list[dict[str, Any]]:
    """A ServiceAccount allowed to report on this one asset's status, and nothing else."""
    name = fetch_identity_name(asset)
    meta = _meta(asset, name, "fetch")
    rules = [
        {
            "apiGroups": [API_VERSION.split("/")[0]],
            "resources": ["modelassets/status"],
            "resourceNames": [asset.name],
            "verbs": ["patch"],  # the fetcher only sends merge patches
        }
    ]
    return [
        render("serviceaccount", **meta, automount=False),
        render("role", **meta, rules=rules),
        render("rolebinding", **meta, role=name, service_account=name),
    ]


def _pod_values(asset: Asset, settings: OperatorSettings) -> dict[str, Any]:
    return {
        **pod_values(settings),
        "image": settings.engine_image,
        "claim_name": claim_name(asset),
        "models_mount": MODELS_MOUNT,
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
    }


def fetch_env(asset: Asset) -> list[dict[str, Any]]:
    spec = asset.spec
    fetch = FetchSpec(
        asset=asset.name,
        namespace=asset.namespace,
        version=spec.version,
        dest=Path(version_path(asset.name, spec.version)),
        report="kube",
        files=tuple(FileSpec(url=f.url, sha256=f.sha256, path=f.path) for f in spec.files or []),
        ollama_model=spec.ollama.model if spec.ollama else None,
        auth_header_name=spec.auth.header if spec.auth else "Authorization",
        hf_endpoint=spec.hugging_face.endpoint if spec.hugging_face else None,
        s3_endpoint=spec.s3.endpoint if spec.s3 else None,
        s3_region=spec.s3.region if spec.s3 else None,
        s3_path_style=spec.s3.path_style if spec.s3 else False,
    )
    env: list[dict[str, Any]] = [
        *job_env(fetch),
        # `ollama serve` writes a key pair under $HOME; the root filesystem is read-only.
        {"name": "HOME", "value": "/tmp"},
    ]
    # Credentials by reference only: the kubelet resolves them, the Job never holds them.
    secrets: list[tuple[str, str, str]] = []
    if spec.auth:
        secrets.append(("auth_header_value", spec.auth.secret_ref.name, spec.auth.secret_ref.key))
    if spec.hugging_face and spec.hugging_face.token_secret_ref:
        ref = spec.hugging_face.token_secret_ref
        secrets.append(("hf_token", ref.name, ref.key))
    if spec.s3 and spec.s3.credentials_secret_ref:
        creds = spec.s3.credentials_secret_ref
        secrets.append(("s3_access_key_id", creds.name, creds.access_key_id_key))
        secrets.append(("s3_secret_access_key", creds.name, creds.secret_access_key_key))
    for field, name, key in secrets:
        env.append(
            {
                "name": env_name(field),
                "valueFrom": {"secretKeyRef": {"name": name, "key": key}},
            }
        )
    return env


def desired_fetch_job(asset: Asset, settings: OperatorSettings) -> dict[str, Any]:
    """The download Job of spec.version; its name changes when the files change."""
    return render(
        "job",
        **_meta(asset, fetch_job_name(asset), "fetch", **{LABEL_VERSION: asset.spec.version}),
        annotations={ANNOTATION_SPEC_HASH: source_hash(asset.spec)},
        ttl_seconds_after_finished=None,
        backoff_limit=3,
        pod_failure_rules=[
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": "fetch",
                    "operator": "In",
                    "values": [int(code) for code in PERMANENT_EXIT_CODES],
                },
            }
        ],
        service_account=fetch_identity_name(asset),
        # The fetcher needs a token to report; the ServiceAccount allows nothing else.
        automount_token=True,
        container="fetch",
        command=["voice-fetch"],
        env=fetch_env(asset),
        **_pod_values(asset, settings),
    )


def desired_prune_job(
    asset: Asset, versions: list[str], settings: OperatorSettings
) -> dict[str, Any]:
    """Deletes the folders of `versions` (none of which an agent uses)."""
    folders = [version_path(asset.name, v) for v in sorted(versions)]
    return render(
        "job",
        **_meta(asset, f"{asset.name}-prune-{short_hash(sorted(versions), 8)}", "prune"),
        annotations={ANNOTATION_PRUNE: ",".join(sorted(versions))},
        ttl_seconds_after_finished=PRUNE_JOB_TTL_SECONDS,
        backoff_limit=3,
        pod_failure_rules=[],
        service_account="default",
        automount_token=False,
        container="prune",
        command=["rm", "-rf", "--", *folders],
        env=[],
        **_pod_values(asset, settings),
    )
