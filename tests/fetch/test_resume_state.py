"""A resume in a new process continues from the hash state saved beside the .part: it reads
back none of the bytes already hashed. A state that is missing, corrupt, ahead of the file
or of other bytes falls back to re-hashing or a clean download, never to a wrong digest."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fetchkit import VOICE_FETCH, ModelFile, entry, fetch_env, run_fetch
from fileserver import FileServer

from voice_fetch import sha256
from voice_fetch.part_file import SavedState, write_state

pytestmark = pytest.mark.fetch
PREFIX = 25_000_000


def test_resume_after_sigterm_reads_back_nothing_already_hashed(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    url = server.add("joe.onnx", m.path, rate=m.size / 3)
    dest = tmp_path / "v1"
    env = fetch_env(dest, [entry(m, url)])
    proc = subprocess.Popen([str(VOICE_FETCH)], env=env, stdout=subprocess.DEVNULL)
    part, state = dest / "joe.onnx.part", dest / "joe.onnx.part.sha256-state"
    while not (part.exists() and part.stat().st_size > 10_000_000):
        time.sleep(0.02)
    proc.terminate()
    assert proc.wait(timeout=10) == 143
    kept = part.stat().st_size
    assert json.loads(state.read_text())["body"]["size"] == kept  # saved on the way out
    server.served("joe.onnx").behaviour.rate = None

    run = run_fetch(env)

    assert run.code == 0, run.stderr
    assert "re-hashed" not in run.stderr
    assert server.served("joe.onnx").requests[-1]["range"] == f"bytes={kept}-"
    # The validator came back with the state: the server may answer 206 only if unchanged.
    assert server.served("joe.onnx").requests[-1]["headers"]["If-Range"]
    assert (dest / "joe.onnx").read_bytes() == m.path.read_bytes()
    assert not state.exists() and not part.exists()


def _part_with_state(dest: Path, data: bytes, state_of: bytes | None = None) -> Path:
    """A .part holding `data` and the saved hash state of `state_of` (default: `data`)."""
    dest.mkdir(parents=True)
    (dest / "joe.onnx.part").write_bytes(data)
    hasher = sha256.new()
    hasher.update(state_of if state_of is not None else data)
    state = sha256.state_of(hasher)
    assert state is not None
    path = dest / "joe.onnx.part.sha256-state"
    write_state(path, SavedState(len(data), state, None))
    return path


def test_bytes_after_the_saved_state_are_all_that_is_read_back(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    body = m.path.read_bytes()
    dest = tmp_path / "v1"
    _part_with_state(dest, body[:PREFIX])
    with (dest / "joe.onnx.part").open("ab") as f:  # written after the last saved state
        f.write(body[PREFIX : PREFIX + 1_000_000])

    run = run_fetch(fetch_env(dest, [entry(m, server.add("joe.onnx", m.path))]))

    assert run.code == 0, run.stderr
    assert "re-hashed 1000000 bytes" in run.stderr
    assert server.served("joe.onnx").requests[0]["range"] == f"bytes={PREFIX + 1_000_000}-"
    assert (dest / "joe.onnx").read_bytes() == body


def _garbage(state: Path) -> None:
    state.write_bytes(b"{not json")


def _tampered(state: Path) -> None:
    doc = json.loads(state.read_text())
    doc["body"]["size"] -= 1  # the check no longer matches
    state.write_text(json.dumps(doc))


def _resized(state: Path) -> None:
    # A consistent check, but the hash state has not seen `size` bytes.
    body = json.loads(state.read_text())["body"]
    write_state(state, SavedState(body["size"] - 64, bytes.fromhex(body["state"]), None))


def _ahead(state: Path) -> None:
    part = state.with_name("joe.onnx.part")
    with part.open("r+b") as f:
        f.truncate(PREFIX - 1_000_000)  # the disk lost bytes the state had seen


@pytest.mark.parametrize(
    ("spoil", "rehashed"),
    [
        (lambda s: s.unlink(), PREFIX),
        (_garbage, PREFIX),
        (_tampered, PREFIX),
        (_resized, PREFIX),
        (_ahead, PREFIX - 1_000_000),
    ],
    ids=["missing", "garbage", "tampered", "size-mismatch", "ahead-of-the-file"],
)
def test_unusable_state_falls_back_to_rehashing_the_part(
    tmp_path: Path,
    server: FileServer,
    models: dict[str, ModelFile],
    spoil: Callable[[Path], None],
    rehashed: int,
) -> None:
    m = models["joe.onnx"]
    dest = tmp_path / "v1"
    spoil(_part_with_state(dest, m.path.read_bytes()[:PREFIX]))

    run = run_fetch(fetch_env(dest, [entry(m, server.add("joe.onnx", m.path))]))

    assert run.code == 0, run.stderr
    assert f"re-hashed {rehashed} bytes" in run.stderr
    assert server.served("joe.onnx").requests[0]["range"] == f"bytes={rehashed}-"
    assert (dest / "joe.onnx").read_bytes() == m.path.read_bytes()


def test_state_of_other_bytes_never_gives_a_wrong_digest(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    dest = tmp_path / "v1"
    # A well-formed state of PREFIX bytes, but not of the bytes in the .part.
    _part_with_state(dest, m.path.read_bytes()[:PREFIX], state_of=b"\0" * PREFIX)

    run = run_fetch(fetch_env(dest, [entry(m, server.add("joe.onnx", m.path))]))

    assert run.code == 0, run.stderr
    # The digest did not match, so the inherited bytes were dropped for a clean download.
    assert [r["range"] for r in server.served("joe.onnx").requests] == [f"bytes={PREFIX}-", None]
    assert (dest / "joe.onnx").read_bytes() == m.path.read_bytes()
