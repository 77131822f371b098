"""Filesystem helpers: hashing files, durable renames and writes, free space."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from voice_contracts.layout import LOCK_NAME
from voice_fetch.errors import FetchError, Reason

HASH_BLOCK = 1 << 20


class _Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...


def hash_into(hasher: _Hasher, path: Path, start: int = 0, block: int = HASH_BLOCK) -> int:
    """Feed the file's bytes from `start` on to `hasher`; returns how many were read."""
    count = 0
    with path.open("rb") as f:
        f.seek(start)
        buf = bytearray(block)
        view = memoryview(buf)
        while n := f.readinto(buf):
            hasher.update(view[:n])
            count += n
    return count


def sha256_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = hash_into(hasher, path)
    return hasher.hexdigest(), size


def fsync_dir(path: Path) -> None:
    # A rename is only durable once the directory entry itself reaches the disk.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_rename(src: Path, dst: Path) -> None:
    """Rename `src` (already fsynced) over `dst` and make the rename durable."""
    os.replace(src, dst)
    fsync_dir(dst.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a torn write."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        durable_rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_durably(path: Path) -> None:
    if path.exists():
        path.unlink()
        fsync_dir(path.parent)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def is_within(child: Path, folder: Path) -> bool:
    """True when `child` resolves inside `folder` (symlinks followed)."""
    return child.resolve().is_relative_to(folder.resolve())


@contextmanager
def folder_lock(folder: Path, timeout: float) -> Iterator[None]:
    """Exclusive lock on the version folder.

    A Job may start its replacement pod while the old one is still terminating; two
    writers on one `.part` would corrupt it, so the second waits for the first to exit.
    """
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FetchError(
                        Reason.INTERNAL_ERROR,
                        f"another fetcher still holds {folder / LOCK_NAME} after {timeout:.0f}s",
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
