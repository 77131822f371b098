"""Progress and result reporting: the ModelAsset's status subresource, or JSON lines.

The download never waits on the API: a background thread sends the newest state, at
most one progress patch per interval plus one at each state change. Only the final
report blocks, with retries, because the exit code depends on it being accepted.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from voice_contracts import GROUP, VERSION
from voice_contracts.fetch import (
    DOWNLOADING,
    DownloadPhase,
    DownloadStatus,
    FileStatus,
    download_patch,
)
from voice_fetch.manifest import FileRecord

log = logging.getLogger(__name__)

PLURAL = "modelassets"


@dataclass(frozen=True)
class DownloadState:
    phase: DownloadPhase
    reason: str
    message: str
    done_bytes: int = 0
    total_bytes: int = 0
    files: tuple[FileRecord, ...] = field(default=())


def download_status(state: DownloadState, now: datetime) -> DownloadStatus:
    files = None
    if state.phase == "Verified":
        files = [FileStatus(path=f.path, sha256=f.sha256, bytes=f.bytes) for f in state.files]
    return DownloadStatus(
        phase=state.phase,
        reason=state.reason,
        message=state.message,
        done_bytes=state.done_bytes,
        total_bytes=state.total_bytes,
        files=files,
        # Second precision, as the apiserver keeps its own timestamps.
        updated_at=now.astimezone(UTC).replace(microsecond=0),
    )


def status_patch(version: str, state: DownloadState, now: datetime) -> dict[str, Any]:
    return download_patch(version, download_status(state, now))


def status_path(namespace: str, asset: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{asset}/status"


class Sink(Protocol):
    def send(self, patch: dict[str, Any]) -> None: ...

    def is_transient(self, exc: BaseException) -> bool: ...


class LogSink:
    """JSON lines on stdout, one per report: for runs outside a cluster and for tests."""

    def __init__(self, asset: str, namespace: str, stream: TextIO | None = None) -> None:
        self.asset = asset
        self.namespace = namespace
        self.stream = stream or sys.stdout

    def send(self, patch: dict[str, Any]) -> None:
        line = {"kind": "status", "asset": self.asset, "namespace": self.namespace, **patch}
        self.stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.stream.flush()

    def is_transient(self, exc: BaseException) -> bool:  # noqa: ARG002 (the Sink protocol)
        return False


class KubeSink:
    """Merge-patches the ModelAsset's status subresource (RBAC: get/patch on
    modelassets/status for this one name)."""

    REQUEST_TIMEOUT = (5.0, 15.0)

    def __init__(self, asset: str, namespace: str, api: Any = None) -> None:
        from kubernetes import client

        self.asset = asset
        self.namespace = namespace
        self.api = api or client.CustomObjectsApi(_api_client())

    def send(self, patch: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            self.asset,
            patch,
            # Said explicitly: older clients pick json-patch+json for a dict body.
            _content_type="application/merge-patch+json",
            _request_timeout=self.REQUEST_TIMEOUT,
        )

    def is_transient(self, exc: BaseException) -> bool:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        if isinstance(exc, ApiException):
            return exc.status in (0, 408, 429) or exc.status >= 500
        return isinstance(exc, Urllib3Error | OSError)


def _api_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def describe_report_error(exc: BaseException | None) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"API status {status} {reason or ''}".strip()
    return type(exc).__name__


class Reporter:
    """Sends the newest DownloadState through a sink from a background thread."""

    def __init__(
        self,
        sink: Sink,
        version: str,
        interval: float,
        progress: Callable[[], tuple[int, int]],
        *,
        final_attempts: int = 6,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.version = version
        self.interval = interval
        self.progress = progress
        self.final_attempts = final_attempts
        self.backoff_max = backoff_max
        self.clock = clock
        self._cond = threading.Condition()
        self._state = DownloadState(DOWNLOADING, DOWNLOADING, "starting")
        self._state_changed = False
        self._stopping = False
        self._last_sent_at = float("-inf")
        self._last_progress: tuple[int, int] | None = None
        self._thread = threading.Thread(target=self._run, name="status-reporter", daemon=True)
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    def set_state(self, phase: DownloadPhase, reason: str, message: str) -> None:
        with self._cond:
            if (phase, reason, message) == (
                self._state.phase,
                self._state.reason,
                self._state.message,
            ):
                return
            self._state = replace(self._state, phase=phase, reason=reason, message=message)
            self._state_changed = True
            self._cond.notify()

    def _next_due(self) -> tuple[bool, float]:
        """(send now?, else how long to wait). Called with the lock held."""
        if self._state_changed:
            return True, 0.0
        wait = self._last_sent_at + self.interval - self.clock()
        if wait > 0:
            return False, wait
        if self.progress() != self._last_progress:
            return True, 0.0
        return False, self.interval

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    due, wait = self._next_due()
                    if due:
                        break
                    self._cond.wait(wait)
                if self._stopping:
                    return
                self._state_changed = False
                done, total = self._last_progress = self.progress()
                state = replace(self._state, done_bytes=done, total_bytes=total)
                self._last_sent_at = self.clock()
            try:
                self._send(state)
            except Exception as exc:
                # Progress is best effort; the next tick sends a newer state anyway.
                log.warning("status report failed: %s", describe_report_error(exc))

    def _send(self, state: DownloadState) -> None:
        self.sink.send(status_patch(self.version, state, datetime.now(UTC)))
        self.sent += 1

    def finish(self, final: DownloadState) -> bool:
        """Stop the progress thread and deliver `final`; True when it was accepted."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=sum(KubeSink.REQUEST_TIMEOUT) + 1)
        retrying = Retrying(
            stop=stop_after_attempt(self.final_attempts),
            wait=wait_random_exponential(multiplier=0.5, max=self.backoff_max),
            retry=retry_if_exception(self.sink.is_transient),
            before_sleep=lambda rs: log.warning(
                "final status report failed (%s), retrying",
                describe_report_error(rs.outcome.exception()) if rs.outcome else "?",
            ),
        )
        try:
            retrying(self._send, final)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            log.error("final status report not accepted: %s", describe_report_error(cause))
            return False
        except Exception as exc:
            log.error("final status report not accepted: %s", describe_report_error(exc))
            return False
        return True
