"""A volume too small for the model: DiskFull, exit 4, nothing left behind as final.

The small volume is a real size-limited tmpfs mounted for the test, which needs root
(CI runs as root). Without root the tests are skipped, saying why.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest
from fetchkit import ModelFile, entry, fetch_env, run_fetch
from fileserver import FileServer
from testground.storage import TmpfsUnavailableError, size_limited_tmpfs

from voice_fetch.errors import is_disk_full


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    try:
        with size_limited_tmpfs(tmp_path / "pvc", "8m") as mount_point:
            yield mount_point
    except TmpfsUnavailableError as e:
        pytest.skip(str(e))


def _previous_version(volume: Path, m: ModelFile) -> Path:
    folder = volume / "joe" / "v0"
    folder.mkdir(parents=True)
    (folder / m.name).write_bytes(m.path.read_bytes())
    return folder


def _assert_nothing_left(dest: Path, name: str) -> None:
    assert not (dest / name).exists()
    assert not (dest / f"{name}.part").exists()
    assert not (dest / ".manifest.json").exists()


def test_disk_fills_while_streaming(
    small_volume: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    small, big = models["joe.onnx.json"], models["joe.onnx"]
    previous = _previous_version(small_volume, small)
    # Without Content-Length nothing can be checked up front: the write itself fails.
    url = server.add("joe.onnx", big.path, no_length=True)
    dest = small_volume / "joe" / "v1"

    run = run_fetch(fetch_env(dest, [entry(big, url)]))

    assert run.code == 4, run.stderr
    assert run.final["phase"] == "Failed"
    assert run.final["reason"] == "DiskFull"
    assert "spec.files[0] (joe.onnx)" in run.final["message"]
    _assert_nothing_left(dest, "joe.onnx")
    assert server.served("joe.onnx").bytes_sent > 4_000_000  # it really streamed
    assert (previous / small.name).read_bytes() == small.path.read_bytes()


def test_known_size_that_cannot_fit_fails_before_downloading(
    small_volume: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    big = models["joe.onnx"]
    url = server.add("joe.onnx", big.path, rate=20e6)
    dest = small_volume / "joe" / "v1"

    run = run_fetch(fetch_env(dest, [entry(big, url)]))

    assert run.code == 4, run.stderr
    assert run.final["reason"] == "DiskFull"
    assert "needs" in run.final["message"]
    assert server.served("joe.onnx").bytes_sent < 1_000_000
    _assert_nothing_left(dest, "joe.onnx")


def test_local_copy_that_cannot_fit(small_volume: Path, models: dict[str, ModelFile]) -> None:
    big = models["whisper.bin"]
    dest = small_volume / "joe" / "v1"

    run = run_fetch(fetch_env(dest, [entry(big, big.path.as_uri())]))

    assert run.code == 4, run.stderr
    assert run.final["reason"] == "DiskFull"
    _assert_nothing_left(dest, "whisper.bin")


@pytest.mark.unit
def test_quota_exceeded_counts_as_disk_full() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
