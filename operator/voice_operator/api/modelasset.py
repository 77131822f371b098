"""ModelAsset: model files with a version and sha256, downloaded into a PVC by a Job."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from voice_contracts.fetch import (
    HF_URL,
    HF_URL_FORM,
    S3_URL,
    S3_URL_FORM,
    URL_SCHEMES,
    DownloadStatus,
    FileStatus,
    SourceUrl,
)
from voice_operator.api.common import (
    DNS_SUBDOMAIN,
    ApiModel,
    Condition,
    Quantity,
    SecretKeyRef,
    StatusModel,
    cel,
    object_name_schema,
    validations,
)

Engine = Literal["stt", "tts", "llm"]
ModelFormat = Literal["ggml", "ct2", "onnx", "gguf", "ollama"]
AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"]
_READ_WRITE_ONCE: list[AccessMode] = ["ReadWriteOnce"]

# Which formats each engine can serve; the CRD and the operator both enforce it.
FORMATS_BY_ENGINE: dict[str, tuple[str, ...]] = {
    "stt": ("ggml", "ct2"),
    "tts": ("onnx",),
    "llm": ("gguf", "ollama"),
}

# Segments may not start with a dot, so "." and ".." (and hidden files) can't appear.
RELATIVE_PATH = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
SHA256 = r"^[a-f0-9]{64}$"
URL = rf"^({'|'.join(URL_SCHEMES)})://[^\s]+$"
HTTP_URL = r"^https?://[^\s/]+(/[^\s]*)?$"

# Used as a folder name and a label value.
VERSION = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


def _cel_string(text: str) -> str:
    """`text` as a CEL string literal in single quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# The longest names the operator derives from an asset's are its download and prune Jobs',
# <name>-fetch-<8 hex> and <name>-prune-<8 hex>; the Job controller copies a Job's name into
# its pods' job-name label, and a label value has at most 63 characters.
MAX_NAME_LENGTH = 63 - len("-fetch-") - 8
NAME_SCHEMA = object_name_schema(
    MAX_NAME_LENGTH,
    "its download and prune Jobs are named <name>-fetch-<8-character hash> and "
    "<name>-prune-<hash>, and a Job's name becomes its pods' job-name label, which has at "
    "most 63 characters",
)


class ModelFile(ApiModel):
    """One file of the model, verified by its sha256."""

    url: SourceUrl = Field(
        description="Where to download the file from: an http(s) or file url, "
        "hf://<org>/<repo>[@<revision>]/<path> (a Hugging Face model repo; see "
        "spec.huggingFace) or s3://<bucket>/<key> (see spec.s3).",
        max_length=2048,
        pattern=URL,
        json_schema_extra=validations(
            cel(f"!self.startsWith('hf://') || self.matches({_cel_string(HF_URL)})", HF_URL_FORM),
            cel(f"!self.startsWith('s3://') || self.matches({_cel_string(S3_URL)})", S3_URL_FORM),
        ),
    )
    sha256: str = Field(
        description="Expected SHA-256 of the file, lowercase hex.", max_length=64, pattern=SHA256
    )
    path: str = Field(
        description="Path of the file inside the version folder; may not leave that folder.",
        min_length=1,
        max_length=255,
        pattern=RELATIVE_PATH,
        json_schema_extra=validations(
            cel(
                "!self.split('/').exists(s, s == '..' || s == '.')",
                "path may not contain '.' or '..' segments: it must stay inside the version folder",
            )
        ),
    )


class OllamaSource(ApiModel):
    """An Ollama model pulled into the PVC (format ollama)."""

    model: str = Field(
        description="Ollama model reference, e.g. llama3.2:1b.",
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
    )


class StorageSpec(ApiModel):
    """Where the versions live: a PVC the operator creates, or one that already exists."""

    size: Quantity | None = Field(
        default=None, description="Size of the PVC the operator creates, e.g. 2Gi."
    )
    storage_class_name: str | None = Field(
        default=None,
        description="StorageClass of the created PVC (cluster default if unset).",
        max_length=253,
    )
    access_modes: list[AccessMode] = Field(
        default_factory=lambda: _READ_WRITE_ONCE.copy(),
        description="Access modes of the created PVC. Use ReadWriteMany when engine pods "
        "on several nodes read the same asset.",
        min_length=1,
        max_length=3,
    )
    existing_claim: str | None = Field(
        default=None,
        description="Use this PVC instead of creating one. Versions go to /<asset>/<version>/.",
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    retain_on_delete: bool = Field(
        default=False,
        description="Keep the created PVC when the ModelAsset is deleted.",
    )

    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.size) != has(self.existingClaim)",
                "set exactly one of storage.size and storage.existingClaim",
            ),
            cel(
                "!has(self.size) || quantity(string(self.size)).isGreaterThan(quantity('0'))",
                "storage.size must be greater than zero",
                field_path=".size",
            ),
        )
    }


class AuthSpec(ApiModel):
    """An HTTP header sent with every download, its value read from a Secret."""

    secret_ref: SecretKeyRef = Field(description="Secret key holding the header's value.")
    header: str = Field(
        default="Authorization",
        description="Header name, e.g. Authorization (value 'Bearer …') or X-Api-Key.",
        pattern=r"^[A-Za-z0-9-]+$",
        max_length=64,
    )


class HuggingFaceSource(ApiModel):
    """How hf:// files are fetched: the Hub's endpoint and a token for private or gated
    repos."""

    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Hugging Face access token (hf_...); public "
        "repos need none.",
    )
    endpoint: str | None = Field(
        default=None,
        description="Hub endpoint, for a mirror or a private Hub; default: the public Hub.",
        max_length=2048,
        pattern=HTTP_URL,
    )


class S3Credentials(ApiModel):
    """A Secret holding an S3 key pair."""

    name: str = Field(
        description="Name of the Secret (same namespace).",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    access_key_id_key: str = Field(
        default="AWS_ACCESS_KEY_ID",
        description="Key of the access key id in the Secret.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )
    secret_access_key_key: str = Field(
        default="AWS_SECRET_ACCESS_KEY",
        description="Key of the secret access key in the Secret.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


class S3Source(ApiModel):
    """How s3:// files are fetched: the endpoint of an S3-compatible store and its keys."""

    endpoint: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible store (MinIO, Ceph, R2...), e.g. "
        "http://minio.storage:9000; default: AWS S3 of spec.s3.region.",
        max_length=2048,
        pattern=HTTP_URL,
    )
    region: str | None = Field(
        default=None,
        description="Region of the bucket, e.g. eu-central-1 (signs the requests).",
        max_length=64,
        pattern=r"^[a-z0-9-]+$",
    )
    path_style: bool = Field(
        default=False,
        description="Always address buckets as <endpoint>/<bucket>. Left false, the "
        "client picks: <bucket>.<endpoint> (virtual-hosted) on AWS, path-style elsewhere.",
    )
    credentials_secret_ref: S3Credentials | None = Field(
        default=None,
        description="Secret with the key pair; public buckets need none.",
    )


class ModelAssetSpec(ApiModel):
    """The model a user wants available, at one version."""

    engine: Engine = Field(description="Which engine serves this model: stt, tts or llm.")
    format: ModelFormat = Field(
        description="ggml (whisper.cpp), ct2 (faster-whisper), onnx (Piper), gguf "
        "(llama.cpp) or ollama."
    )
    version: str = Field(
        description="The user's label for this version; a new label downloads beside the "
        "old ones. Used as a folder name.",
        min_length=1,
        max_length=63,
        pattern=VERSION,
    )
    files: list[ModelFile] | None = Field(
        default=None,
        description="The files of this version (Piper needs the .onnx and the .onnx.json).",
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["path"]},
    )
    main_file: str | None = Field(
        default=None,
        description="Path (one of files[].path) the engine loads; default: the first file. "
        "ct2 models are loaded as a folder.",
        max_length=255,
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._/-]*$",
    )
    ollama: OllamaSource | None = Field(
        default=None, description="Pull this Ollama model instead of downloading files."
    )
    storage: StorageSpec = Field(description="Where the versions are stored.")
    retain_versions: int = Field(
        default=2,
        ge=1,
        le=20,
        description="How many Ready versions to keep on disk (versions an agent uses are "
        "always kept).",
    )
    auth: AuthSpec | None = Field(
        default=None, description="Credentials for private http(s) download hosts."
    )
    hugging_face: HuggingFaceSource | None = Field(
        default=None, description="Token and endpoint for hf:// files."
    )
    s3: S3Source | None = Field(
        default=None, description="Endpoint, region and credentials for s3:// files."
    )

    model_config = {
        "json_schema_extra": validations(
            cel(
                "self.format == 'ollama' ? has(self.ollama) && !has(self.files) "
                ": has(self.files) && size(self.files) > 0 && !has(self.ollama)",
                "format ollama needs spec.ollama and no spec.files; other formats need "
                "spec.files and no spec.ollama",
            ),
            cel(
                "(self.engine == 'stt' && self.format in ['ggml', 'ct2']) || "
                "(self.engine == 'tts' && self.format == 'onnx') || "
                "(self.engine == 'llm' && self.format in ['gguf', 'ollama'])",
                "spec.format does not fit spec.engine: stt takes ggml or ct2, tts takes "
                "onnx, llm takes gguf or ollama",
                field_path=".format",
            ),
            cel(
                "self.engine != 'tts' || !has(self.files) || "
                "(self.files.exists(f, f.path.endsWith('.onnx')) && "
                "self.files.exists(f, f.path.endsWith('.onnx.json')))",
                "a Piper voice needs both the .onnx and the .onnx.json in spec.files",
                field_path=".files",
            ),
            cel(
                "!has(self.mainFile) || (has(self.files) && "
                "self.files.exists(f, f.path == self.mainFile))",
                "spec.mainFile must be one of spec.files[].path",
                field_path=".mainFile",
            ),
        )
    }

    @model_validator(mode="after")
    def _cross_field_rules(self) -> ModelAssetSpec:
        # The same rules as the CEL above, for clusters or paths where CEL did not run.
        if self.format == "ollama":
            if self.ollama is None or self.files:
                raise ValueError("format ollama needs spec.ollama and no spec.files")
        elif not self.files or self.ollama is not None:
            raise ValueError(f"format {self.format} needs spec.files and no spec.ollama")
        if self.format not in FORMATS_BY_ENGINE[self.engine]:
            allowed = " or ".join(FORMATS_BY_ENGINE[self.engine])
            raise ValueError(
                f"spec.format {self.format} does not fit engine {self.engine}: use {allowed}"
            )
        paths = [f.path for f in self.files or []]
        if len(set(paths)) != len(paths):
            raise ValueError("spec.files has duplicate paths")
        if self.main_file is not None and self.main_file not in paths:
            raise ValueError("spec.mainFile must be one of spec.files[].path")
        return self

    @property
    def loaded_path(self) -> str:
        """What the engine loads, relative to the version folder ('' = the folder itself)."""
        if self.format in ("ct2", "ollama"):
            return ""
        if self.main_file:
            return self.main_file
        assert self.files  # guaranteed by the validator
        wanted = {"ggml": ".bin", "onnx": ".onnx", "gguf": ".gguf"}.get(self.format, "")
        for f in self.files:
            if f.path.endswith(wanted):
                return f.path
        return self.files[0].path


class VersionStatus(StatusModel):
    """A version that is on disk and verified."""

    version: str = Field(description="The version label.")
    path: str = Field(description="Folder inside the PVC: /<asset>/<version>.")
    files: list[FileStatus] = Field(default_factory=list, description="Verified files.")
    bytes: int = Field(default=0, description="Total size of the files.")
    ready_at: datetime | None = Field(default=None, description="When it was verified.")
    source: str | None = Field(
        default=None, description="Hash of the spec (urls, digests, paths) it was made from."
    )
    main_file: str | None = Field(
        default=None, description="What the engine loads, relative to path ('' = the folder)."
    )
    format: str | None = Field(default=None, description="The model format.")


class Progress(StatusModel):
    """Download progress of spec.version."""

    done_bytes: int = 0
    total_bytes: int = 0
    percent: int = Field(default=0, ge=0, le=100)


AssetPhase = Literal["Pending", "Downloading", "Ready", "Failed"]


class ModelAssetStatus(StatusModel):
    """Observed state of a ModelAsset."""

    phase: AssetPhase | None = Field(default=None, description="Summary of spec.version's state.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Downloading, Failed."
    )
    current_version: str | None = Field(
        default=None, description="The newest Ready version: what agents use."
    )
    versions: list[VersionStatus] = Field(
        default_factory=list, description="Ready versions on disk, newest first."
    )
    progress: Progress | None = Field(default=None, description="Progress of spec.version.")
    downloads: dict[str, DownloadStatus] = Field(
        default_factory=dict, description="Reports of the download Jobs, by version."
    )
    claim_name: str | None = Field(default=None, description="The PVC holding the versions.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status is about."
    )
