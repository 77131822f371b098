"""Reads the Job's environment into a validated FetchSpec.

Every problem becomes an InvalidSpecError naming the field the user wrote
(`spec.files[1].path`) or, for what the operator itself sets, the variable (`FETCH_DEST`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from voice_operator.fetch.errors import InvalidSpecError

MANIFEST_NAME = ".manifest.json"
LOCK_NAME = ".fetch.lock"
PART_SUFFIX = ".part"
# Names the fetcher itself writes in the version folder; a model file may not take them.
RESERVED_NAMES = frozenset({MANIFEST_NAME, LOCK_NAME, MANIFEST_NAME + ".tmp"})
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_OLLAMA_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}")

# Where each FetchSpec field comes from, for error messages.
_ENV_OF_FIELD = {
    "asset": "FETCH_ASSET",
    "namespace": "FETCH_NAMESPACE",
    "version": "FETCH_VERSION",
    "dest": "FETCH_DEST",
    "ollama_model": "spec.ollama.model",
    "auth_header_name": "FETCH_AUTH_HEADER_NAME",
    "report": "FETCH_REPORT",
    "stall_timeout": "FETCH_STALL_TIMEOUT",
    "max_attempts": "FETCH_MAX_ATTEMPTS",
    "backoff_max": "FETCH_BACKOFF_MAX",
    "report_interval": "FETCH_REPORT_INTERVAL",
    "chunk_size": "FETCH_CHUNK_SIZE",
    "ollama_insecure": "FETCH_OLLAMA_INSECURE",
}
_FIELD_OF_ENV = {env: field for field, env in _ENV_OF_FIELD.items() if env.startswith("FETCH_")}
_FIELD_OF_ENV["FETCH_OLLAMA_MODEL"] = "ollama_model"
_FIELD_OF_ENV["FETCH_OLLAMA_INSECURE"] = "ollama_insecure"


class FileSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    url: str
    sha256: str
    path: str

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "file"):
            raise ValueError(f"unsupported url scheme {parts.scheme!r}: use http, https or file")
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError("a file url names a local path (file:///...), not a host")
            if not unquote(parts.path).startswith("/"):
                raise ValueError("a file url needs an absolute path")
        elif not parts.hostname:
            raise ValueError("the url has no host")
        return url

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
    def is_file_url(self) -> bool:
        return self.url.startswith("file:")

    @property
    def local_source(self) -> Path:
        return Path(unquote(urlsplit(self.url).path))


class FetchSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    asset: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=63)
    version: str = Field(min_length=1, max_length=63)
    dest: Path
    files: tuple[FileSpec, ...] = ()
    ollama_model: str | None = None
    ollama_bin: str | None = None
    # Pull over plain http: an in-cluster registry mirror without TLS.
    ollama_insecure: bool = False
    auth_header_name: str = "Authorization"
    auth_header_value: SecretStr | None = None
    report: Literal["kube", "log"] = "log"
    stall_timeout: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    backoff_max: float = Field(default=30.0, ge=0)
    report_interval: float = Field(default=2.0, gt=0)
    chunk_size: int = Field(default=1 << 20, ge=4096, le=64 << 20)  # file:// copies

    @field_validator("dest")
    @classmethod
    def _dest(cls, dest: Path) -> Path:
        if not dest.is_absolute():
            raise ValueError("must be an absolute path")
        return dest

    @field_validator("auth_header_name")
    @classmethod
    def _header_name(cls, name: str) -> str:
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError("must be a header name (letters, digits and '-')")
        return name

    @field_validator("ollama_model")
    @classmethod
    def _ollama_model(cls, model: str | None) -> str | None:
        if model is not None and not _OLLAMA_MODEL.fullmatch(model):
            raise ValueError("is not an Ollama model reference such as llama3.2:1b")
        return model


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
    raw: dict[str, Any] = {
        field: env[var] for var, field in _FIELD_OF_ENV.items() if env.get(var, "") != ""
    }
    raw.setdefault("report", report_mode_default(env))
    if env.get("OLLAMA_BIN"):
        raw["ollama_bin"] = env["OLLAMA_BIN"]
    if "FETCH_AUTH_HEADER" in env:
        raw["auth_header_value"] = env["FETCH_AUTH_HEADER"]

    has_files = env.get("FETCH_FILES", "") != ""
    if has_files == ("ollama_model" in raw):
        raise InvalidSpecError(
            "spec.files",
            "set exactly one of spec.files and spec.ollama (FETCH_FILES or FETCH_OLLAMA_MODEL)",
        )
    if has_files:
        try:
            raw["files"] = json.loads(env["FETCH_FILES"])
        except json.JSONDecodeError as exc:
            raise InvalidSpecError("FETCH_FILES", f"is not valid JSON ({exc.msg})") from None
        if not isinstance(raw["files"], list) or not raw["files"]:
            raise InvalidSpecError("spec.files", "must be a non-empty list")

    try:
        spec = FetchSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidSpecError(_field_name(first["loc"]), _problem(first)) from None
    if spec.auth_header_value is not None and not spec.auth_header_value.get_secret_value():
        raise InvalidSpecError("FETCH_AUTH_HEADER", "is set but empty")
    check_file_set(spec.files)
    return spec


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
        for prefix in [*prefixes, f.path + PART_SUFFIX]:
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
    if head == "files":
        name = "spec.files"
        for part in rest:
            name += f"[{part}]" if isinstance(part, int) else f".{part}"
        return name
    if head == "auth_header_value":
        return "FETCH_AUTH_HEADER"
    return _ENV_OF_FIELD.get(str(head), str(head))


def _problem(error: Any) -> str:
    msg = str(error["msg"])
    # pydantic prefixes messages from our validators with "Value error, ".
    msg = msg.removeprefix("Value error, ")
    if error["type"] == "missing":
        return "is required"
    if error["loc"][0] == "auth_header_value":
        return msg  # never echo the secret
    if error["loc"][-1] == "url" and isinstance(error.get("input"), str):
        return f"{msg} (got {redact_url(error['input'])!r})"
    value = error.get("input")
    if isinstance(value, str | int | float) and len(str(value)) <= 200:
        return f"{msg} (got {value!r})"
    return msg
