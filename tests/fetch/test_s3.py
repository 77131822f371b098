"""s3:// files: voice-fetch against a real MinIO on 127.0.0.1 (through a TCP relay that
counts, cuts or paces the link), with the real model files.

MinIO is built from its Go module by `scripts/build-testground.sh minio` (scripts/
bootstrap.sh runs it); without the binary these tests are skipped, saying so."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fetchkit import VOICE_FETCH, ModelFile, fetch_env, run_fetch
from s3server import ACCESS_KEY, REGION, SECRET_KEY, Relay, S3Server, find_minio, minio_server

pytestmark = pytest.mark.fetch
BUCKET = "models"


@pytest.fixture(scope="module")
def minio(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, ModelFile]
) -> Iterator[S3Server]:
    binary = find_minio()
    if binary is None:
        pytest.skip("no minio binary (scripts/build-testground.sh minio builds one into the cache)")
    with minio_server(binary, tmp_path_factory.mktemp("minio")) as server:
        server.put(BUCKET, "piper/joe.onnx", models["joe.onnx"].path)
        server.put(BUCKET, "piper/joe.onnx.json", models["joe.onnx.json"].path)
        server.put(BUCKET, "whisper/model.bin", models["whisper.bin"].path)
        yield server


@pytest.fixture
def relay(minio: S3Server) -> Iterator[Relay]:
    r = Relay(int(minio.endpoint.rsplit(":", 1)[1]))
    yield r
    r.close()


def _s3_env(dest: Path, relay: Relay, files: list[dict[str, str]], **extra: str) -> dict:
    env = {
        "FETCH_S3_ENDPOINT": relay.endpoint,
        "FETCH_S3_REGION": REGION,
        "FETCH_S3_PATH_STYLE": "true",
        "FETCH_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "FETCH_S3_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    env.update(extra)
    return fetch_env(dest, files, **env)


def _file(m: ModelFile, key: str) -> dict[str, str]:
    return {"url": f"s3://{BUCKET}/{key}", "sha256": m.sha256, "path": m.name}


def test_objects_are_fetched_with_the_secrets_keys_and_verified(
    tmp_path: Path, relay: Relay, models: dict[str, ModelFile]
) -> None:
    onnx, json_ = models["joe.onnx"], models["joe.onnx.json"]
    dest = tmp_path / "joe" / "v1"

    run = run_fetch(
        _s3_env(dest, relay, [_file(onnx, "piper/joe.onnx"), _file(json_, "piper/joe.onnx.json")])
    )

    assert run.code == 0, run.stderr
    assert run.final["phase"] == "Verified"
    assert run.final["doneBytes"] == onnx.size + json_.size
    assert (dest / "joe.onnx").read_bytes() == onnx.path.read_bytes()
    assert (dest / "joe.onnx.json").read_bytes() == json_.path.read_bytes()
    assert (dest / ".manifest.json").is_file()
    # Path-style, signed requests: the bucket is in the path, the key pair in the signature.
    gets = [h for h in relay.heads if h.startswith("GET ")]
    assert [g.split()[1] for g in gets] == [
        f"/{BUCKET}/piper/joe.onnx",
        f"/{BUCKET}/piper/joe.onnx.json",
    ]
    assert all(f"Credential={ACCESS_KEY}/" in g for g in gets)
    assert SECRET_KEY not in run.stdout + run.stderr


def test_cut_connection_resumes_with_a_ranged_get_sending_nothing_twice(
    tmp_path: Path, relay: Relay, models: dict[str, ModelFile]
) -> None:
    m = models["whisper.bin"]
    relay.cut_after, relay.cut_times = m.size // 3, 1
    # The first connection carries the HEAD (stat) too; the cut lands in the GET's body.

    run = run_fetch(_s3_env(tmp_path / "v1", relay, [_file(m, "whisper/model.bin")]))

    assert run.code == 0, run.stderr
    assert (tmp_path / "v1" / "whisper.bin").read_bytes() == m.path.read_bytes()
    first, second = relay.ranges()
    assert first is None
    assert second is not None and second.startswith("bytes=") and second.endswith("-")
    assert 0 < int(second[6:-1]) < m.size
    # Body bytes once, plus the heads of a few requests.
    assert relay.bytes_down - m.size < 64 * 1024


def test_resume_in_a_new_process_continues_from_the_part(
    tmp_path: Path, relay: Relay, models: dict[str, ModelFile]
) -> None:
    m = models["whisper.bin"]
    relay.rate = m.size / 3
    dest = tmp_path / "v1"
    env = _s3_env(dest, relay, [_file(m, "whisper/model.bin")])
    proc = subprocess.Popen([str(VOICE_FETCH)], env=env, stdout=subprocess.DEVNULL)
    part = dest / "whisper.bin.part"
    while not (part.exists() and part.stat().st_size > 5_000_000):
        time.sleep(0.02)
    proc.terminate()
    assert proc.wait(timeout=10) == 143
    kept = part.stat().st_size
    relay.rate = None

    run = run_fetch(env)

    assert run.code == 0, run.stderr
    assert "re-hashed" not in run.stderr  # the saved hash state, not a re-read
    assert relay.ranges()[-1] == f"bytes={kept}-"
    last_get = [h for h in relay.heads if h.startswith("GET ")][-1]
    assert "if-match:" in last_get.lower()  # the ETag came back with the state
    assert (dest / "whisper.bin").read_bytes() == m.path.read_bytes()


def test_wrong_secret_key_is_a_clear_permanent_failure(
    tmp_path: Path, relay: Relay, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    dest = tmp_path / "v1"

    run = run_fetch(
        _s3_env(dest, relay, [_file(m, "piper/joe.onnx")], FETCH_S3_SECRET_ACCESS_KEY="wrong-key")
    )

    assert run.code == 5, run.stderr
    assert run.final["reason"] == "Unauthorized"
    assert "refused the credentials" in run.final["message"]
    assert f"s3://{BUCKET}/piper/joe.onnx" in run.final["message"]
    assert "wrong-key" not in run.stdout + run.stderr
    assert not [h for h in relay.heads if h.startswith("GET ")]  # stopped at the stat
    assert not list(dest.glob("*.part*"))


@pytest.mark.parametrize("url", [f"s3://{BUCKET}/piper/missing.onnx", "s3://no-such-bucket/x"])
def test_missing_object_or_bucket_is_not_found(
    tmp_path: Path, relay: Relay, models: dict[str, ModelFile], url: str
) -> None:
    m = models["joe.onnx"]
    files = [{"url": url, "sha256": m.sha256, "path": "joe.onnx"}]

    run = run_fetch(_s3_env(tmp_path / "v1", relay, files))

    assert run.code == 5, run.stderr
    assert run.final["reason"] == "NotFound"
    assert f"{url} does not exist" in run.final["message"]
