"""hf:// files: voice-fetch against a stand-in Hub on 127.0.0.1 (huggingface_hub's
resolve protocol, LFS redirects to a CDN of another origin), with the real model files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fetchkit import ModelFile, fetch_env, run_fetch
from fileserver import FileServer
from hubserver import HubServer

pytestmark = pytest.mark.fetch

TOKEN = "hf_test_token_0123456789abcdef"
REPO = "rhasspy/piper-voices"


@pytest.fixture
def hub(server: FileServer, models: dict[str, ModelFile]) -> Iterator[HubServer]:
    with HubServer(cdn=server) as h:
        h.add_repo(REPO, token=TOKEN)
        h.add_file(REPO, "en/joe.onnx", models["joe.onnx"].path)
        h.add_file(REPO, "en/joe.onnx.json", models["joe.onnx.json"].path)
        yield h


def _hf_env(dest: Path, hub: HubServer, files: list[dict[str, str]], **extra: str) -> dict:
    return fetch_env(dest, files, FETCH_HF_ENDPOINT=hub.endpoint, **extra)


def test_private_repo_files_are_fetched_with_the_token_and_verified(
    tmp_path: Path, hub: HubServer, server: FileServer, models: dict[str, ModelFile]
) -> None:
    files = [
        {"url": f"hf://{REPO}@main/en/joe.onnx", "sha256": models["joe.onnx"].sha256,
         "path": "joe.onnx"},
        {"url": f"hf://{REPO}/en/joe.onnx.json", "sha256": models["joe.onnx.json"].sha256,
         "path": "joe.onnx.json"},
    ]  # fmt: skip
    dest = tmp_path / "joe" / "v1"

    run = run_fetch(_hf_env(dest, hub, files, FETCH_HF_TOKEN=TOKEN))

    assert run.code == 0, run.stderr
    assert run.final["phase"] == "Verified"
    assert (dest / "joe.onnx").read_bytes() == models["joe.onnx"].path.read_bytes()
    assert (dest / "joe.onnx.json").read_bytes() == models["joe.onnx.json"].path.read_bytes()
    assert (dest / ".manifest.json").is_file()
    # The Hub saw the token on every request; the bytes came from the CDN, which never did.
    assert hub.requests and all(r["authorization"] == f"Bearer {TOKEN}" for r in hub.requests)
    cdn = [r for s in server.files.values() for r in s.requests]
    assert len(cdn) == 2
    assert all("Authorization" not in r["headers"] for r in cdn)
    # The bytes were asked for at the commit that "main" resolved to, not at the branch.
    commit = hub.repos[REPO].commit
    gets = [r["path"] for r in hub.requests if r["method"] == "GET"]
    assert gets == [
        f"/{REPO}/resolve/{commit}/en/joe.onnx",
        f"/{REPO}/resolve/{commit}/en/joe.onnx.json",
    ]
    assert TOKEN not in run.stdout + run.stderr


def test_wrong_token_is_a_clear_permanent_failure(
    tmp_path: Path, hub: HubServer, server: FileServer, models: dict[str, ModelFile]
) -> None:
    files = [{"url": f"hf://{REPO}/en/joe.onnx", "sha256": models["joe.onnx"].sha256,
              "path": "joe.onnx"}]  # fmt: skip
    dest = tmp_path / "v1"

    run = run_fetch(_hf_env(dest, hub, files, FETCH_HF_TOKEN="hf_wrong_token_value"))

    assert run.code == 5, run.stderr  # permanent: the Job is not retried
    assert run.final["phase"] == "Failed"
    assert run.final["reason"] == "Unauthorized"
    assert "the Hub refused the token" in run.final["message"]
    assert "Invalid credentials" in run.final["message"]
    assert "hf_wrong_token_value" not in run.stdout + run.stderr
    assert len(hub.requests) == 1  # not retried
    assert server.total_requests == 0
    assert not list(dest.glob("*.part"))


def test_private_repo_without_token_says_to_give_one(
    tmp_path: Path, hub: HubServer, models: dict[str, ModelFile]
) -> None:
    files = [{"url": f"hf://{REPO}/en/joe.onnx", "sha256": models["joe.onnx"].sha256,
              "path": "joe.onnx"}]  # fmt: skip

    run = run_fetch(_hf_env(tmp_path / "v1", hub, files))

    assert run.code == 5, run.stderr
    assert run.final["reason"] == "Unauthorized"
    assert "spec.huggingFace.tokenSecretRef" in run.final["message"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (f"hf://{REPO}@v9/en/joe.onnx", "has no revision v9"),
        (f"hf://{REPO}/en/missing.onnx", "does not exist"),
    ],
)
def test_missing_revision_or_file_is_not_found(
    tmp_path: Path, hub: HubServer, models: dict[str, ModelFile], url: str, words: str
) -> None:
    files = [{"url": url, "sha256": models["joe.onnx"].sha256, "path": "joe.onnx"}]

    run = run_fetch(_hf_env(tmp_path / "v1", hub, files, FETCH_HF_TOKEN=TOKEN))

    assert run.code == 5, run.stderr
    assert run.final["reason"] == "NotFound"
    assert words in run.final["message"]


def test_cut_cdn_connection_resumes_with_range_and_the_hub_is_asked_again(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["whisper.bin"]
    with HubServer(cdn=server) as hub:
        hub.add_repo("org/whisper-tiny")  # public: no token
        hub.add_file("org/whisper-tiny", "model.bin", m.path, cut_after=m.size // 3, cut_times=1)
        files = [{"url": "hf://org/whisper-tiny@main/model.bin", "sha256": m.sha256,
                  "path": "model.bin"}]  # fmt: skip

        run = run_fetch(fetch_env(tmp_path / "v1", files, HF_ENDPOINT=hub.endpoint))

    assert run.code == 0, run.stderr
    assert (tmp_path / "v1" / "model.bin").read_bytes() == m.path.read_bytes()
    (served,) = server.files.values()
    assert [r["range"] for r in served.requests] == [None, f"bytes={m.size // 3}-"]
    assert served.bytes_sent == m.size  # nothing sent twice
    assert all(r["authorization"] is None for r in hub.requests)
