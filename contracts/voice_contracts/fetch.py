"""The download Job: what the operator tells the fetcher (environment variables), what
the fetcher reports back (the ModelAsset's status.downloads entry) and how it exits.

The operator renders the Job's environment with `job_env(FetchSpec(...))`; the fetcher
reads it back with `load_spec(os.environ)`. Each variable's name is the alias of its
field, written here once. Every problem becomes an InvalidSpecError naming the field the
user wrote (`spec.files[1].path`) or, for what the operator sets, the variable."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from enum import IntEnum, StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
)
from pydantic.alias_generators import to_camel

from voice_contracts.layout import PART_STATE_SUFFIX, PART_SUFFIX, RESERVED_NAMES

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_OLLAMA_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}")

# The url forms of the model sources, here once: the CRD's rules (voice_operator.api) and
# the fetcher's validation both use these. They check the shape only; the fetcher then
# parses an hf url with huggingface_hub's own parser (a revision such as refs/pr/1 may
# hold '/'), and the default repo type is a model (datasets/ and spaces/ prefixes work).
HF_URL = (
    r"^hf://((datasets|spaces)/)?[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*"
    r"(@[^@\s/][^@\s]*)?/[^\s]*[^\s/]$"
)
HF_URL_FORM = "an hf url is hf://<org>/<repo>[@<revision>]/<path of a file in the repo>"
# Bucket names as S3 allows them (3-63 of lowercase letters, digits, '.', '-').
S3_URL = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\s]+$"
S3_URL_FORM = "an s3 url is s3://<bucket>/<key>"
URL_SCHEMES = ("http", "https", "file", "hf", "s3")


class Reason(StrEnum):
    """Why a download failed: the reason of the asset's condition."""

    CHECKSUM_MISMATCH = "ChecksumMismatch"
    HTTP_ERROR = "HTTPError"
    NOT_FOUND = "NotFound"
    UNAUTHORIZED = "Unauthorized"
    DISK_FULL = "DiskFull"
    STALLED = "Stalled"
    CONNECTION_ERROR = "ConnectionError"
    INVALID_SPEC = "InvalidSpec"
    OLLAMA_PULL_FAILED = "OllamaPullFailed"
    # Anything the list above does not name (permission denied on the PVC, a bug): the
    # operator treats it like any other failure, and the message says what happened.
    INTERNAL_ERROR = "InternalError"


class ExitCode(IntEnum):
    OK = 0
    OTHER = 1
    INVALID_SPEC = 2
    CHECKSUM = 3
    DISK_FULL = 4
    NOT_FOUND = 5
    # 128 + SIGTERM, the shell convention: the pod was stopped, nothing was reported.
    TERMINATED = 143


# What no retry can fix: the Job's podFailurePolicy fails the Job at once on these.
PERMANENT_EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode.INVALID_SPEC,
    ExitCode.CHECKSUM,
    ExitCode.DISK_FULL,
    ExitCode.NOT_FOUND,
)

_EXIT_BY_REASON = {
    Reason.INVALID_SPEC: ExitCode.INVALID_SPEC,
    Reason.CHECKSUM_MISMATCH: ExitCode.CHECKSUM,
    Reason.DISK_FULL: ExitCode.DISK_FULL,
    Reason.NOT_FOUND: ExitCode.NOT_FOUND,
    Reason.UNAUTHORIZED: ExitCode.NOT_FOUND,
}


def exit_code_for(reason: Reason) -> ExitCode:
    return _EXIT_BY_REASON.get(reason, ExitCode.OTHER)


class FetchError(Exception):
    """A failure with its reason; the message is shown to users, so it never holds secrets."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_for(self.reason)


class InvalidSpecError(FetchError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(Reason.INVALID_SPEC, f"{field}: {problem}")
        self.field = field


# --- the input --------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why `url` is no source the fetcher can read, or None. One rule for both sides: the
    operator's spec model and the fetcher's input."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"is not a url ({exc})"
    if parts.scheme not in URL_SCHEMES:
        return f"unsupported url scheme {parts.scheme!r}: use {', '.join(URL_SCHEMES)}"
    if parts.scheme == "hf":
        return None if re.fullmatch(HF_URL, url) else HF_URL_FORM
    if parts.scheme == "s3":
        return None if re.fullmatch(S3_URL, url) else S3_URL_FORM
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            return "a file url names a local path (file:///...), not a host"
        if not unquote(parts.path).startswith("/"):
            return "a file url needs an absolute path"
    elif not parts.hostname:
        return "the url has no host"
    return None


def _checked_url(url: str) -> str:
    problem = url_problem(url)
    if problem:
        raise ValueError(problem)
    return url


# A file's source as both the ModelAsset spec and the fetcher's input accept it.
SourceUrl = Annotated[str, AfterValidator(_checked_url)]


class FileSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    url: SourceUrl
    sha256: str
    path: str

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256.fullmatch(value):
            raise ValueError("must be 64 hex digits")
        if value == EMPTY_SHA256:
            raise ValueError("is the digest of an empty file: a zero-size model file")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        problem = path_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def is_file_url(self) -> bool:
        return self.scheme == "file"

    @property
    def local_source(self) -> Path:
        return Path(unquote(urlsplit(self.url).path))


class FetchSpec(BaseModel):
    """The fetcher's input. Each alias is the environment variable that carries it."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    asset: str = Field(alias="FETCH_ASSET", min_length=1, max_length=253)
    namespace: str = Field(alias="FETCH_NAMESPACE", min_length=1, max_length=63)
    version: str = Field(alias="FETCH_VERSION", min_length=1, max_length=63)
    dest: Path = Field(alias="FETCH_DEST")
    report: Literal["kube", "log"] = Field("log", alias="FETCH_REPORT")
    # JSON in the environment: [{"url", "sha256", "path"}, ...].
    files: tuple[FileSpec, ...] = Field((), alias="FETCH_FILES")
    ollama_model: str | None = Field(None, alias="FETCH_OLLAMA_MODEL")
    ollama_bin: str | None = Field(None, alias="OLLAMA_BIN")
    # Pull over plain http: an in-cluster registry mirror without TLS.
    ollama_insecure: bool = Field(False, alias="FETCH_OLLAMA_INSECURE")
    auth_header_name: str = Field("Authorization", alias="FETCH_AUTH_HEADER_NAME")
    # From a Secret (valueFrom), never rendered as a value.
    auth_header_value: SecretStr | None = Field(None, alias="FETCH_AUTH_HEADER")
    # hf:// files: the Hub (or a mirror) and a token; unset, huggingface_hub's defaults.
    hf_endpoint: str | None = Field(None, alias="FETCH_HF_ENDPOINT")
    hf_token: SecretStr | None = Field(None, alias="FETCH_HF_TOKEN")
    # s3:// files: an S3-compatible endpoint (unset: AWS), its region, path-style
    # addressing (MinIO, Ceph) and the key pair; both keys come from a Secret.
    s3_endpoint: str | None = Field(None, alias="FETCH_S3_ENDPOINT")
    s3_region: str | None = Field(None, alias="FETCH_S3_REGION", max_length=64)
    s3_path_style: bool = Field(False, alias="FETCH_S3_PATH_STYLE")
    s3_access_key_id: SecretStr | None = Field(None, alias="FETCH_S3_ACCESS_KEY_ID")
    s3_secret_access_key: SecretStr | None = Field(None, alias="FETCH_S3_SECRET_ACCESS_KEY")
    stall_timeout: float = Field(30.0, alias="FETCH_STALL_TIMEOUT", gt=0)
    max_attempts: int = Field(6, alias="FETCH_MAX_ATTEMPTS", ge=1)
    backoff_max: float = Field(30.0, alias="FETCH_BACKOFF_MAX", ge=0)
    report_interval: float = Field(2.0, alias="FETCH_REPORT_INTERVAL", gt=0)
    chunk_size: int = Field(1 << 20, alias="FETCH_CHUNK_SIZE", ge=4096, le=64 << 20)

    @field_validator("dest")
    @classmethod
    def _dest(cls, dest: Path) -> Path:
        if not dest.is_absolute():
            raise ValueError("must be an absolute path")
        return dest

    @field_validator("files", mode="before")
    @classmethod
    def _files_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_serializer("files")
    def _files_text(self, files: tuple[FileSpec, ...]) -> str:
        return json.dumps([f.model_dump() for f in files], separators=(",", ":"))

    @field_validator("auth_header_name")
    @classmethod
    def _header_name(cls, name: str) -> str:
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError("must be a header name (letters, digits and '-')")
        return name

    @field_validator("hf_endpoint", "s3_endpoint")
    @classmethod
    def _endpoint(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http or https url")
        return url

    @field_validator("ollama_model")
    @classmethod
    def _ollama_model(cls, model: str | None) -> str | None:
        if model is not None and not _OLLAMA_MODEL.fullmatch(model):
            raise ValueError("is not an Ollama model reference such as llama3.2:1b")
        return model


def env_name(field: str) -> str:
    """The environment variable of a FetchSpec field."""
    alias = FetchSpec.model_fields[field].alias
    assert alias is not None
    return alias


# The fields that carry credentials: the Job takes each from a Secret (valueFrom).
SECRET_FIELDS = ("auth_header_value", "hf_token", "s3_access_key_id", "s3_secret_access_key")


def job_env(spec: FetchSpec) -> list[dict[str, str]]:
    """The Job's `env` for what differs from the fetcher's defaults; the secrets are left
    to the caller, who knows the Secrets they come from (valueFrom)."""
    values = spec.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    for field in SECRET_FIELDS:
        values.pop(env_name(field), None)
    return [{"name": name, "value": str(value)} for name, value in values.items()]


# The variables that carry what the user wrote in the ModelAsset, for error messages.
_USER_FIELD = {"FETCH_FILES": "spec.files", "FETCH_OLLAMA_MODEL": "spec.ollama.model"}


def path_problem(path: str) -> str | None:
    """Why `path` may not be used inside the version folder, or None if it may."""
    if not path:
        return "is empty"
    if "\\" in path or "\x00" in path:
        return "may not contain backslashes or NUL"
    pure = PurePosixPath(path)
    if pure.is_absolute():
        return "must be relative to the version folder"
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return "may not contain empty, '.' or '..' segments: it must stay inside its folder"
    if path in RESERVED_NAMES:
        return f"{path!r} is reserved for the fetcher"
    return None


def redact_url(url: str) -> str:
    """The url without credentials or query: presigned urls carry tokens there."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def report_mode_default(env: Mapping[str, str]) -> Literal["kube", "log"]:
    return "kube" if env.get("KUBERNETES_SERVICE_HOST") else "log"


def load_spec(env: Mapping[str, str]) -> FetchSpec:
    """Validate the environment; raises InvalidSpecError naming the first bad field."""
    secrets = {env_name(f) for f in SECRET_FIELDS}
    raw: dict[str, Any] = {}
    for info in FetchSpec.model_fields.values():
        assert info.alias is not None
        if env.get(info.alias, "") != "" or (info.alias in secrets and info.alias in env):
            raw[info.alias] = env[info.alias]
    raw.setdefault(env_name("report"), report_mode_default(env))

    files, model = env_name("files"), env_name("ollama_model")
    if (files in raw) == (model in raw):
        raise InvalidSpecError(
            "spec.files",
            f"set exactly one of spec.files and spec.ollama ({files} or {model})",
        )
    if files in raw:
        try:
            raw[files] = json.loads(raw[files])
        except json.JSONDecodeError as exc:
            raise InvalidSpecError(files, f"is not valid JSON ({exc.msg})") from None
        if not isinstance(raw[files], list) or not raw[files]:
            raise InvalidSpecError("spec.files", "must be a non-empty list")

    try:
        spec = FetchSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidSpecError(_field_name(first["loc"]), _problem(first)) from None
    for field in SECRET_FIELDS:
        value = getattr(spec, field)
        if value is not None and not value.get_secret_value():
            raise InvalidSpecError(env_name(field), "is set but empty")
    if (spec.s3_access_key_id is None) != (spec.s3_secret_access_key is None):
        raise InvalidSpecError(
            env_name("s3_secret_access_key"),
            "an S3 key pair needs both the access key id and the secret access key",
        )
    check_file_set(spec.files)
    return spec


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The credentials in the environment, for the log filter that cuts them out."""
    return [v for f in SECRET_FIELDS if (v := env.get(env_name(f), ""))]


def check_file_set(files: tuple[FileSpec, ...]) -> None:
    """Problems only visible across files: two files at one path, a file under a file."""
    seen: dict[str, int] = {}
    for i, f in enumerate(files):
        key = f.path
        if key in seen:
            raise InvalidSpecError(
                f"spec.files[{i}].path", f"duplicates spec.files[{seen[key]}].path ({f.path!r})"
            )
        seen[key] = i
    for i, f in enumerate(files):
        # The parts of one file's path may not be another file, nor its temporary name.
        prefixes = ["/".join(f.path.split("/")[:k]) for k in range(1, f.path.count("/") + 1)]
        for prefix in [*prefixes, f.path + PART_SUFFIX, f.path + PART_STATE_SUFFIX]:
            j = seen.get(prefix)
            if j is not None and j != i:
                raise InvalidSpecError(
                    f"spec.files[{j}].path",
                    f"{files[j].path!r} clashes with spec.files[{i}].path ({f.path!r})",
                )


def _field_name(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "spec"
    head, *rest = loc
    name = _USER_FIELD.get(str(head), str(head))
    if head == env_name("files"):
        for part in rest:
            name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def _problem(error: Any) -> str:
    msg = str(error["msg"])
    # pydantic prefixes messages from our validators with "Value error, ".
    msg = msg.removeprefix("Value error, ")
    if error["type"] == "missing":
        return "is required"
    if error["loc"][0] in {env_name(f) for f in SECRET_FIELDS}:
        return msg  # never echo the secret
    if error["loc"][-1] == "url" and isinstance(error.get("input"), str):
        return f"{msg} (got {redact_url(error['input'])!r})"
    value = error.get("input")
    if isinstance(value, str | int | float) and len(str(value)) <= 200:
        return f"{msg} (got {value!r})"
    return msg


# --- the report -------------------------------------------------------------------------

DownloadPhase = Literal["Downloading", "Verified", "Failed"]
DOWNLOADING: DownloadPhase = "Downloading"
VERIFIED: DownloadPhase = "Verified"
FAILED: DownloadPhase = "Failed"


class _Status(BaseModel):
    # A newer fetcher may report more than this operator knows: ignore, don't fail.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class FileStatus(_Status):
    """A verified file on disk."""

    path: str
    sha256: str
    bytes: int


class DownloadStatus(_Status):
    """What the download Job reports about one version (written by the fetcher)."""

    phase: DownloadPhase
    reason: str = ""
    message: str = ""
    done_bytes: int = 0
    total_bytes: int = 0
    files: list[FileStatus] | None = None
    updated_at: datetime | None = None


def download_patch(version: str, status: DownloadStatus) -> dict[str, Any]:
    """JSON merge patch for the ModelAsset's status subresource, keyed by version so that
    Jobs of different versions of one asset never overwrite each other's entry."""
    entry = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {"status": {"downloads": {version: entry}}}
