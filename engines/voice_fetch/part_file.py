"""`<final>.part`: the bytes of a file being fetched, and the sha256 of exactly those."""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from voice_contracts.layout import PART_SUFFIX
from voice_fetch.disk import durable_rename, hash_into

log = logging.getLogger(__name__)

# Bytes written between two background flushes: the final fsync then has little left.
FLUSH_EVERY = 64 << 20
# Chunks waiting for the hashing thread; bounds the memory a slow hash may hold.
HASH_QUEUE = 64


class PartFile:
    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.with_name(final.name + PART_SUFFIX)
        self.hasher = hashlib.sha256()
        self.size = 0
        # Bytes left by an earlier process: their origin is unknown, so a digest
        # mismatch earns one clean download before it is reported.
        self.inherited = 0
        # ETag / Last-Modified of the response the bytes came from, for If-Range.
        self.validator: str | None = None
        # Bytes read back from disk to rebuild the hash (the cost of a resume).
        self.rehashed = 0

    def load(self) -> None:
        """Adopt what an earlier process left: hash the prefix, then keep streaming into
        the same hasher."""
        if self.path.is_file():
            self.size = hash_into(self.hasher, self.path)
            self.rehashed += self.size
            self.inherited = self.size

    def ensure_consistent(self) -> None:
        """The hasher must describe the bytes on disk; re-hash them if it may not."""
        on_disk = self.path.stat().st_size if self.path.exists() else 0
        if on_disk == self.size:
            return
        log.warning(
            "%s holds %d bytes, %d expected: hashing it again", self.path, on_disk, self.size
        )
        self.hasher, self.size, self.validator = hashlib.sha256(), 0, None
        if on_disk:
            self.size = hash_into(self.hasher, self.path)
            self.rehashed += self.size
        self.inherited = self.size

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.hasher, self.size, self.inherited, self.validator = hashlib.sha256(), 0, 0, None

    @contextmanager
    def appender(self) -> Iterator[Callable[[bytes], None]]:
        """Yields `append(chunk)`. The hash runs on the second core and dirty pages are
        flushed behind the writes; both are caught up when the block exits, even by an
        exception, so the hasher always matches the bytes on disk."""
        with self.path.open("ab") as f, _HashWorker(self.hasher) as hashing:
            flusher = _Flusher(f.fileno())
            unflushed = 0
            try:

                def append(chunk: bytes) -> None:
                    nonlocal unflushed
                    f.write(chunk)
                    hashing.put(chunk)
                    self.size += len(chunk)
                    unflushed += len(chunk)
                    if unflushed >= FLUSH_EVERY:
                        f.flush()
                        flusher.kick()
                        unflushed = 0

                yield append
            finally:
                flusher.stop()

    def commit(self) -> None:
        with self.path.open("rb") as f:
            os.fsync(f.fileno())
        durable_rename(self.path, self.final)


class _HashWorker:
    def __init__(self, hasher: hashlib._Hash) -> None:
        self.hasher = hasher
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_QUEUE)
        self.thread = threading.Thread(target=self._run, name="sha256", daemon=True)

    def _run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            self.hasher.update(chunk)

    def put(self, chunk: bytes) -> None:
        self.chunks.put(chunk)

    def __enter__(self) -> _HashWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.chunks.put(None)
        self.thread.join()


class _Flusher:
    """fdatasync in the background, so the final fsync before the rename is short."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.wanted = threading.Event()
        self.stopping = False
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._run, name="flush", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.wanted.wait()
            self.wanted.clear()
            if self.stopping:
                return
            try:
                os.fdatasync(self.fd)
            except OSError as exc:
                self.error = exc
                return

    def kick(self) -> None:
        if self.error is not None:
            raise self.error  # ENOSPC may surface only at flush time
        self.wanted.set()

    def stop(self) -> None:
        self.stopping = True
        self.wanted.set()
        self.thread.join()
