"""Format ollama: `ollama serve` with OLLAMA_MODELS in the version folder, a pull through
it, the manifest over what it wrote.

With the real `ollama` binary (OLLAMA_BIN, PATH, or the one scripts/build-ollama.sh built
into the cache) the pull is real, from a registry on 127.0.0.1 serving the SmolLM2 GGUF.
Without it those tests are skipped, saying why.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fetchkit import ModelFile, fetch_env, run_fetch
from fileserver import FileServer
from ollama_registry import OllamaRegistry

from voice_contracts.fetch import FetchError, Reason
from voice_fetch.manifest import scan_tree
from voice_fetch.ollama_pull import find_ollama, ollama_server


def _real_ollama() -> str | None:
    cache = os.environ.get("VOICE_OPERATOR_CACHE", os.path.expanduser("~/.cache/voice-operator"))
    built = sorted(glob.glob(f"{cache}/ollama-*/ollama"))
    for candidate in [os.environ.get("OLLAMA_BIN"), shutil.which("ollama"), *reversed(built)]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def ollama_bin() -> str:
    binary = _real_ollama()
    if binary is None:
        pytest.skip("no ollama binary (scripts/build-ollama.sh builds one into the cache)")
    return binary


@pytest.fixture
def registry(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> Iterator[OllamaRegistry]:
    reg = OllamaRegistry(models["smollm2.gguf"].path, tmp_path, server)
    yield reg
    reg.close()


def _ollama_env(dest: Path, binary: str, model: str) -> dict[str, str]:
    env = fetch_env(
        dest,
        OLLAMA_BIN=binary,
        FETCH_OLLAMA_MODEL=model,
        FETCH_OLLAMA_INSECURE="true",
        FETCH_REPORT_INTERVAL="0.2",
    )
    env["HOME"] = str(dest.parent)  # ollama serve keeps its key pair in ~/.ollama
    return env


@pytest.mark.fetch
def test_pull_into_the_version_folder(
    tmp_path: Path,
    ollama_bin: str,
    registry: OllamaRegistry,
    server: FileServer,
    models: dict[str, ModelFile],
) -> None:
    gguf = models["smollm2.gguf"]
    # Slow enough (about 1.5 s) for progress to be reported while it runs.
    server.served(f"cdn/sha256:{gguf.sha256}").behaviour.rate = gguf.size / 1.5
    dest = tmp_path / "smol" / "v1"
    model = f"{registry.host}/library/smol:latest"

    run = run_fetch(_ollama_env(dest, ollama_bin, model), timeout=120)

    assert run.code == 0, run.stderr
    blob = dest / "blobs" / f"sha256-{gguf.sha256}"
    assert blob.read_bytes() == gguf.path.read_bytes()
    manifest = json.loads((dest / ".manifest.json").read_text())
    paths = [f["path"] for f in manifest["files"]]
    assert f"blobs/sha256-{gguf.sha256}" in paths
    assert f"manifests/{registry.host}/library/smol/latest" in paths
    for f in manifest["files"]:
        data = (dest / f["path"]).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (f["sha256"], f["bytes"])
    assert run.final["phase"] == "Verified"
    assert run.final["files"] == manifest["files"]
    assert any(0 < s["doneBytes"] < gguf.size for s in run.statuses)  # pull progress

    pulled = len(registry.requests)
    rerun = run_fetch(_ollama_env(dest, ollama_bin, model), timeout=120)

    assert rerun.code == 0, rerun.stderr
    assert len(registry.requests) == pulled  # complete: no pull, no request
    assert "nothing to pull" in rerun.stderr


@pytest.mark.fetch
def test_failed_pull_is_ollama_pull_failed_and_the_server_is_stopped(
    tmp_path: Path, ollama_bin: str, registry: OllamaRegistry
) -> None:
    registry.missing = True
    dest = tmp_path / "smol" / "v1"

    run = run_fetch(_ollama_env(dest, ollama_bin, f"{registry.host}/library/gone:1b"), timeout=120)

    assert run.code == 1
    assert run.final["phase"] == "Failed"
    assert run.final["reason"] == "OllamaPullFailed"
    assert "ollama pull" in run.final["message"]
    assert not (dest / ".manifest.json").exists()
    pid = int(run.stderr.split("started ollama serve (pid ")[1].split(")")[0])
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.fetch
def test_server_starts_on_loopback_and_stops(tmp_path: Path, ollama_bin: str) -> None:
    import httpx

    with ollama_server(ollama_bin, tmp_path) as host:
        assert host.startswith("http://127.0.0.1:")
        assert httpx.get(f"{host}/api/version").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{host}/api/version")


@pytest.mark.fetch
def test_missing_binary_is_ollama_pull_failed(tmp_path: Path) -> None:
    run = run_fetch(
        fetch_env(tmp_path / "v1", OLLAMA_BIN=str(tmp_path / "no-ollama"), FETCH_OLLAMA_MODEL="x:1")
    )

    assert run.code == 1
    assert run.final["reason"] == "OllamaPullFailed"
    assert "binary was not found" in run.final["message"]
    with pytest.raises(FetchError) as caught:
        find_ollama(str(tmp_path / "no-ollama"))
    assert caught.value.reason is Reason.OLLAMA_PULL_FAILED


@pytest.mark.unit
def test_manifest_tree_skips_the_fetchers_own_and_partial_files(tmp_path: Path) -> None:
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "sha256-ab").write_bytes(b"layer")
    (tmp_path / "blobs" / "sha256-cd-partial").write_bytes(b"half")
    (tmp_path / "blobs" / "sha256-cd-partial-0").write_bytes(b"{}")
    (tmp_path / ".fetch.lock").write_bytes(b"")
    (tmp_path / ".manifest.json").write_bytes(b"{}")

    records = scan_tree(tmp_path)

    assert [(r.path, r.bytes) for r in records] == [("blobs/sha256-ab", 5)]
    assert records[0].sha256 == hashlib.sha256(b"layer").hexdigest()
