"""The environment contract: what is accepted, and the field each rejection names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voice_contracts.fetch import EMPTY_SHA256, ExitCode, InvalidSpecError, load_spec

SHA = "a" * 64
GOOD = {"url": "https://models.example/joe.onnx", "sha256": SHA, "path": "joe.onnx"}


def env(files: Any = None, **extra: str) -> dict[str, str]:
    out = {
        "FETCH_ASSET": "joe",
        "FETCH_NAMESPACE": "voice",
        "FETCH_VERSION": "v1",
        "FETCH_DEST": "/models/joe/v1",
        "FETCH_FILES": json.dumps([GOOD] if files is None else files),
    }
    out.update(extra)
    return out


def rejected(environ: dict[str, str]) -> InvalidSpecError:
    with pytest.raises(InvalidSpecError) as caught:
        load_spec(environ)
    assert caught.value.exit_code == ExitCode.INVALID_SPEC
    return caught.value


@pytest.mark.unit
def test_defaults() -> None:
    spec = load_spec(env())
    assert spec.dest == Path("/models/joe/v1")
    assert spec.files[0].sha256 == SHA
    assert spec.report == "log"
    assert spec.auth_header_name == "Authorization"
    assert spec.auth_header_value is None
    assert spec.report_interval == 2.0
    assert load_spec(env(KUBERNETES_SERVICE_HOST="10.0.0.1")).report == "kube"
    assert load_spec(env(KUBERNETES_SERVICE_HOST="10.0.0.1", FETCH_REPORT="log")).report == "log"


@pytest.mark.unit
def test_tunables_and_file_urls() -> None:
    spec = load_spec(
        env(
            [{"url": "file:///srv/models/joe.onnx", "sha256": SHA.upper(), "path": "a/b.onnx"}],
            FETCH_STALL_TIMEOUT="2.5",
            FETCH_MAX_ATTEMPTS="3",
            FETCH_BACKOFF_MAX="1",
            FETCH_REPORT_INTERVAL="0.5",
            FETCH_CHUNK_SIZE="65536",
        )
    )
    assert (spec.stall_timeout, spec.max_attempts, spec.backoff_max) == (2.5, 3, 1.0)
    assert spec.files[0].sha256 == SHA  # normalised to lower case
    assert spec.files[0].local_source == Path("/srv/models/joe.onnx")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("files", "field", "words"),
    [
        ([{**GOOD, "sha256": None}], "spec.files[0].sha256", ""),
        ([{"url": GOOD["url"], "path": "x"}], "spec.files[0].sha256", "required"),
        ([{**GOOD, "sha256": "abc"}], "spec.files[0].sha256", "64 hex"),
        ([{**GOOD, "sha256": EMPTY_SHA256}], "spec.files[0].sha256", "zero-size"),
        ([GOOD, {**GOOD, "url": "ftp://h/x", "path": "y"}], "spec.files[1].url", "scheme"),
        ([{**GOOD, "url": "file://host/x"}], "spec.files[0].url", "local path"),
        ([{**GOOD, "path": "../other/joe.onnx"}], "spec.files[0].path", "inside"),
        ([{**GOOD, "path": "a/../../x"}], "spec.files[0].path", "inside"),
        ([{**GOOD, "path": "/etc/passwd"}], "spec.files[0].path", "relative"),
        ([{**GOOD, "path": ""}], "spec.files[0].path", "empty"),
        ([{**GOOD, "path": ".manifest.json"}], "spec.files[0].path", "reserved"),
        ([GOOD, {**GOOD, "url": "http://h/2"}], "spec.files[1].path", "duplicates spec.files[0]"),
        ([GOOD, {**GOOD, "path": "joe.onnx/x"}], "spec.files[0].path", "clashes"),
        ([GOOD, {**GOOD, "path": "joe.onnx.part"}], "spec.files[1].path", "clashes"),
        ([{**GOOD, "url": "hf://rhasspy/joe.onnx"}], "spec.files[0].url", "an hf url is"),
        ([{**GOOD, "url": "hf://org/repo@/joe.onnx"}], "spec.files[0].url", "an hf url is"),
        ([{**GOOD, "url": "hf://org/repo@main/"}], "spec.files[0].url", "an hf url is"),
        ([{**GOOD, "url": "s3://Models/joe.onnx"}], "spec.files[0].url", "an s3 url is"),
        ([{**GOOD, "url": "s3://models"}], "spec.files[0].url", "an s3 url is"),
        ([], "spec.files", "non-empty"),
        (["joe.onnx"], "spec.files[0]", ""),
    ],
)
def test_bad_files_name_the_field(files: Any, field: str, words: str) -> None:
    error = rejected(env(files))
    assert error.field == field
    assert error.message.startswith(f"{field}: ")
    assert words in error.message


@pytest.mark.unit
@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"FETCH_DEST": "models/joe/v1"}, "FETCH_DEST"),
        ({"FETCH_VERSION": ""}, "FETCH_VERSION"),
        ({"FETCH_STALL_TIMEOUT": "soon"}, "FETCH_STALL_TIMEOUT"),
        ({"FETCH_MAX_ATTEMPTS": "0"}, "FETCH_MAX_ATTEMPTS"),
        ({"FETCH_REPORT": "slack"}, "FETCH_REPORT"),
        ({"FETCH_AUTH_HEADER_NAME": "Bad Header"}, "FETCH_AUTH_HEADER_NAME"),
        ({"FETCH_FILES": "[{"}, "FETCH_FILES"),
        ({"FETCH_OLLAMA_MODEL": "llama3:8b"}, "spec.files"),  # both sources
        ({"FETCH_FILES": ""}, "spec.files"),  # neither
        ({"FETCH_HF_ENDPOINT": "hub.internal"}, "FETCH_HF_ENDPOINT"),
        ({"FETCH_S3_ENDPOINT": "ftp://store"}, "FETCH_S3_ENDPOINT"),
        ({"FETCH_HF_TOKEN": ""}, "FETCH_HF_TOKEN"),
        ({"FETCH_S3_ACCESS_KEY_ID": "id"}, "FETCH_S3_SECRET_ACCESS_KEY"),  # half a key pair
    ],
)
def test_bad_settings_name_the_variable(extra: dict[str, str], field: str) -> None:
    assert rejected(env(**extra)).field == field


@pytest.mark.unit
def test_ollama_model() -> None:
    spec = load_spec(env(FETCH_FILES="", FETCH_OLLAMA_MODEL="llama3.2:1b"))
    assert spec.ollama_model == "llama3.2:1b"
    assert spec.files == ()
    error = rejected(env(FETCH_FILES="", FETCH_OLLAMA_MODEL="llama3; rm -rf /"))
    assert error.field == "spec.ollama.model"


@pytest.mark.unit
def test_messages_hold_no_secrets() -> None:
    presigned = "ftp://user:hunter2@h/x?X-Amz-Signature=deadbeef"
    error = rejected(env([{**GOOD, "url": presigned}]))
    assert "hunter2" not in error.message
    assert "deadbeef" not in error.message
    spec = load_spec(env(FETCH_AUTH_HEADER="Bearer t0ps3cret"))
    assert "t0ps3cret" not in repr(spec)
    assert spec.auth_header_value is not None
    assert spec.auth_header_value.get_secret_value() == "Bearer t0ps3cret"
