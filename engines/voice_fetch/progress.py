"""Byte counters written by the downloader and read by the reporter thread."""

from __future__ import annotations

import threading
from collections.abc import Hashable


class Progress:
    """Done and total bytes per item (a file, an Ollama layer); totals summed as known."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[Hashable, int] = {}
        self._total: dict[Hashable, int] = {}

    def set_done(self, key: Hashable, done: int) -> None:
        with self._lock:
            self._done[key] = done

    def set_total(self, key: Hashable, total: int | None) -> None:
        with self._lock:
            if total is None:
                self._total.pop(key, None)
            else:
                self._total[key] = total

    def complete(self, key: Hashable, size: int) -> None:
        with self._lock:
            self._done[key] = self._total[key] = size

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            done = sum(self._done.values())
            total = sum(self._total.values())
        # A file whose size the server did not say still counts what arrived.
        return done, max(total, done)
