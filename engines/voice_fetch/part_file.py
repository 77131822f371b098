"""`<final>.part`: the bytes of a file being fetched, and the sha256 of exactly those.

Receiving, writing and hashing overlap: the caller's thread only takes bytes off the
socket and gathers them into large blocks; a writer thread appends the blocks to the file
and a hashing thread feeds the same blocks to SHA-256 (both release the GIL). Queues
between them are bounded, so a slow disk or hash holds back the socket, not memory.

Beside the .part, `<final>.part.sha256-state` holds the hash state of its first N bytes,
saved only once those N bytes are on disk (fdatasync): a new process continues from it and
reads from disk at most what came after N. A missing, corrupt or foreign state means
hashing the .part again; the digest is checked against the spec in any case."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from voice_contracts.layout import PART_STATE_SUFFIX, PART_SUFFIX
from voice_fetch import sha256
from voice_fetch.disk import atomic_write, durable_rename, hash_into

log = logging.getLogger(__name__)

# Bytes written between two syncs, each followed by a saved hash state: what a crash or a
# SIGKILL costs a resume at most, in bytes hashed again.
FLUSH_EVERY = 64 << 20
# Blocks handed to the writer and the hasher: large, so the per-block costs (a queue hop,
# a write call, a hash call) are paid rarely.
BLOCK = 1 << 20
# Blocks waiting in each queue; bounds the memory a slow disk or hash may hold.
QUEUE_BLOCKS = 32
_STATE_VERSION = 1


@dataclass(frozen=True)
class SavedState:
    size: int
    state: bytes
    validator: str | None


class PartFile:
    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.with_name(final.name + PART_SUFFIX)
        self.state_path = final.with_name(final.name + PART_STATE_SUFFIX)
        self.hasher: sha256.Hasher = sha256.new()
        self.size = 0
        # Bytes left by an earlier process: their origin is unknown, so a digest
        # mismatch earns one clean download before it is reported.
        self.inherited = 0
        # ETag / Last-Modified of the response the bytes came from, for If-Range.
        self.validator: str | None = None
        # Bytes read back from disk to rebuild the hash (the cost of a resume).
        self.rehashed = 0

    def load(self) -> None:
        """Adopt what an earlier process left: continue from the saved hash state and read
        only the bytes after it, or hash the whole prefix if there is no usable state."""
        if not self.path.is_file():
            self.state_path.unlink(missing_ok=True)
            return
        on_disk = self.path.stat().st_size
        saved = read_state(self.state_path)
        if saved is not None and saved.size <= on_disk:
            self.hasher = sha256.new(saved.state)
            self.size, self.validator = saved.size, saved.validator
            if on_disk > saved.size:
                tail = hash_into(self.hasher, self.path, start=saved.size)
                self.size += tail
                self.rehashed += tail
        else:
            if saved is not None:
                log.warning("%s: saved hash state is ahead of the file; re-hashing", self.path)
            self.hasher = sha256.new()
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
        self.hasher, self.size, self.validator = sha256.new(), 0, None
        self.state_path.unlink(missing_ok=True)
        if on_disk:
            self.size = hash_into(self.hasher, self.path)
            self.rehashed += self.size
        self.inherited = self.size

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)
        self.hasher, self.size, self.inherited, self.validator = sha256.new(), 0, 0, None

    @contextmanager
    def appender(self) -> Iterator[Callable[[bytes], None]]:
        """Yields `append(piece)`. When the block exits, even by an exception, every byte
        appended is written and hashed, synced, and its hash state saved, so the hasher
        always matches the bytes on disk and the next process can continue from it."""
        with self.path.open("ab") as f:
            pipeline = _Pipeline(f, self.hasher, self.size, self._save_state)
            pending: list[bytes] = []
            gathered = 0

            def hand_over() -> None:
                nonlocal gathered
                if pending:
                    block = pending[0] if len(pending) == 1 else b"".join(pending)
                    pending.clear()
                    gathered = 0
                    pipeline.put(block)

            def append(piece: bytes) -> None:
                nonlocal gathered
                pending.append(piece)
                gathered += len(piece)
                self.size += len(piece)
                if gathered >= BLOCK:
                    hand_over()

            try:
                yield append
            finally:
                # Bytes received before a cut are kept: the resume asks for what follows.
                try:
                    hand_over()
                finally:
                    pipeline.close()

    def commit(self) -> None:
        with self.path.open("rb") as f:
            os.fsync(f.fileno())
        durable_rename(self.path, self.final)
        self.state_path.unlink(missing_ok=True)

    def _save_state(self, size: int, state: bytes) -> None:
        write_state(self.state_path, SavedState(size, state, self.validator))


def write_state(path: Path, saved: SavedState) -> None:
    body: dict[str, Any] = {
        "version": _STATE_VERSION,
        "size": saved.size,
        "state": saved.state.hex(),
        "validator": saved.validator,
    }
    text = json.dumps(body, sort_keys=True)
    check = hashlib.sha256(text.encode()).hexdigest()
    atomic_write(path, json.dumps({"body": body, "check": check}).encode())


def read_state(path: Path) -> SavedState | None:
    """The saved state, or None when it is missing, corrupt or not for this fetcher."""
    try:
        doc: Any = json.loads(path.read_bytes())
        body = doc["body"]
        text = json.dumps(body, sort_keys=True)
        if hashlib.sha256(text.encode()).hexdigest() != doc["check"]:
            raise ValueError("check mismatch")
        if body["version"] != _STATE_VERSION:
            raise ValueError(f"version {body['version']}")
        saved = SavedState(int(body["size"]), bytes.fromhex(body["state"]), body["validator"])
        hasher = sha256.new(saved.state)
        # The state counts the bytes it has seen: it must be the state of `size` bytes.
        if not isinstance(hasher, sha256.ResumableSha256) or hasher.bytes_hashed != saved.size:
            raise ValueError("state does not match its size")
        return saved
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s unusable (%s): hashing the .part again", path, exc)
        return None


class _Pipeline:
    """The writer and the hashing thread. Every FLUSH_EVERY bytes, and at the end, a mark
    goes down both queues: the writer syncs the file up to it, the hasher takes a snapshot
    of its state there; whichever of the two comes second saves the state, which is thus
    never ahead of the disk."""

    def __init__(
        self,
        f: BinaryIO,
        hasher: sha256.Hasher,
        offset: int,
        save: Callable[[int, bytes], None],
    ) -> None:
        self.f, self.hasher, self.save = f, hasher, save
        self.resumable = sha256.state_of(hasher) is not None
        # bytes: data; int: a mark at that offset; None: the end.
        self.to_write: queue.Queue[bytes | int | None] = queue.Queue(QUEUE_BLOCKS)
        self.to_hash: queue.Queue[bytes | int | None] = queue.Queue(QUEUE_BLOCKS)
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.synced = -1
        self.snapshots: dict[int, bytes] = {}
        self.offset = offset  # of the next byte put
        self.unsynced = 0
        # fdatasync off the writer's path: writes go on into the page cache meanwhile.
        self.syncer = _Syncer(f.fileno(), lambda offset: self._offer(offset, None))
        self.threads = [
            threading.Thread(target=self._write, name="write", daemon=True),
            threading.Thread(target=self._hash, name="sha256", daemon=True),
        ]
        for t in self.threads:
            t.start()

    def put(self, block: bytes) -> None:
        if self.error is not None:
            raise self.error  # ENOSPC from the writer, surfaced on the caller's thread
        self.to_write.put(block)
        self.to_hash.put(block)
        self.offset += len(block)
        self.unsynced += len(block)
        if self.unsynced >= FLUSH_EVERY:
            self._mark()

    def close(self) -> None:
        """Drain the threads, sync, save the state; re-raise a writer's error."""
        self._mark()
        self.to_write.put(None)
        self.to_hash.put(None)
        for t in self.threads:
            t.join()
        if self.error is not None:
            raise self.error

    def _mark(self) -> None:
        self.unsynced = 0
        self.to_write.put(self.offset)
        self.to_hash.put(self.offset)

    def _write(self) -> None:
        fd = self.f.fileno()
        while (item := self.to_write.get()) is not None:
            if self.error is not None:
                continue  # drain, so that the caller never blocks on a full queue
            try:
                if isinstance(item, int):
                    self.syncer.request(item)
                else:
                    view = memoryview(item)
                    while view:
                        view = view[os.write(fd, view) :]
            except BaseException as exc:
                self.error = exc
        self.syncer.stop()
        if self.syncer.error is not None and self.error is None:
            self.error = self.syncer.error

    def _hash(self) -> None:
        while (item := self.to_hash.get()) is not None:
            if isinstance(item, int):
                if self.resumable:
                    self._offer(item, sha256.state_of(self.hasher))
            else:
                self.hasher.update(item)

    def _offer(self, offset: int, snapshot: bytes | None) -> None:
        with self.lock:
            if snapshot is None:
                self.synced = offset
            else:
                self.snapshots[offset] = snapshot
            state = self.snapshots.get(self.synced)
            if state is None:
                return
            for k in [k for k in self.snapshots if k <= self.synced]:
                del self.snapshots[k]
            done = self.synced
        with suppress(OSError):
            self.save(done, state)  # a state not saved only costs a re-hash later


class _Syncer:
    """fdatasync in the background. A request for offset N comes after the bytes up to N
    were written, so once a sync that started after the request returns, they are on
    disk; requests that pile up meanwhile share one sync."""

    def __init__(self, fd: int, synced: Callable[[int], None]) -> None:
        self.fd, self.synced = fd, synced
        self.cond = threading.Condition()
        self.wanted: int | None = None
        self.stopping = False
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._run, name="sync", daemon=True)
        self.thread.start()

    def request(self, offset: int) -> None:
        if self.error is not None:
            raise self.error  # ENOSPC may surface only at sync time
        with self.cond:
            self.wanted = offset
            self.cond.notify()

    def stop(self) -> None:
        """Returns once every request so far has been synced."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join()

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.wanted is None and not self.stopping:
                    self.cond.wait()
                offset, self.wanted = self.wanted, None
                if offset is None:
                    return  # stopping, nothing left
            try:
                os.fdatasync(self.fd)
            except OSError as exc:
                self.error = exc
                return
            self.synced(offset)
