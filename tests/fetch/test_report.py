"""The status merge patch, and the reporter's pacing."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from voice_fetch.manifest import FileRecord, manifest_document
from voice_fetch.report import (
    DownloadState,
    Reporter,
    status_patch,
    status_path,
)

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


@pytest.mark.unit
def test_downloading_patch_shape() -> None:
    state = DownloadState("Downloading", "Downloading", "fetching joe.onnx (1/2)", 123, 456)
    assert status_patch("v1", state, NOW) == {
        "status": {
            "downloads": {
                "v1": {
                    "phase": "Downloading",
                    "reason": "Downloading",
                    "message": "fetching joe.onnx (1/2)",
                    "doneBytes": 123,
                    "totalBytes": 456,
                    "updatedAt": "2026-11-24T12:00:00Z",
                }
            }
        }
    }


@pytest.mark.unit
def test_verified_patch_carries_the_files() -> None:
    files = (FileRecord("joe.onnx", "a" * 64, 10), FileRecord("joe.onnx.json", "b" * 64, 2))
    state = DownloadState("Verified", "Verified", "2 files verified", 12, 12, files)
    entry = status_patch("2024-06", state, NOW)["status"]["downloads"]["2024-06"]
    assert entry["files"] == [
        {"path": "joe.onnx", "sha256": "a" * 64, "bytes": 10},
        {"path": "joe.onnx.json", "sha256": "b" * 64, "bytes": 2},
    ]


@pytest.mark.unit
def test_failed_patch_has_no_files() -> None:
    state = DownloadState("Failed", "NotFound", "spec.files[0] (x): HTTP 404", 0, 0, ())
    entry = status_patch("v1", state, NOW)["status"]["downloads"]["v1"]
    assert (entry["phase"], entry["reason"]) == ("Failed", "NotFound")
    assert "files" not in entry


@pytest.mark.unit
def test_status_path_and_manifest_document() -> None:
    assert status_path("voice", "joe") == (
        "/apis/voiceops.dev/v1alpha1/namespaces/voice/modelassets/joe/status"
    )
    doc = manifest_document("v1", [FileRecord("a", "c" * 64, 3)], NOW)
    assert doc == {
        "version": "v1",
        "files": [{"path": "a", "sha256": "c" * 64, "bytes": 3}],
        "completedAt": "2026-11-24T12:00:00Z",
    }


class RecordingSink:
    def __init__(self, fail: int = 0) -> None:
        self.patches: list[dict[str, Any]] = []
        self.fail = fail

    def send(self, patch: dict[str, Any]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionResetError("apiserver went away")
        self.patches.append(patch)

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, ConnectionResetError)


def test_reporter_paces_progress_and_sends_state_changes_at_once() -> None:
    sink = RecordingSink()
    done = [0]
    reporter = Reporter(sink, "v1", 0.3, lambda: (done[0], 1000))
    reporter.start()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        done[0] += 1  # progress changes constantly
        time.sleep(0.001)
    reporter.set_state("Downloading", "Downloading", "fetching b (2/2)")
    time.sleep(0.05)
    changed_at = len(sink.patches)
    assert reporter.finish(DownloadState("Verified", "Verified", "ok", 1000, 1000))

    # 1.5 s at one per 0.3 s: the first state plus at most ~5 progress patches.
    assert 3 <= changed_at <= 1 + 1.5 / 0.3 + 1 + 1
    messages = [p["status"]["downloads"]["v1"]["message"] for p in sink.patches]
    assert "fetching b (2/2)" in messages[:changed_at]  # sent without waiting its turn
    assert messages[-1] == "ok"


def test_final_report_is_retried_when_transient() -> None:
    sink = RecordingSink(fail=2)
    reporter = Reporter(sink, "v1", 10, lambda: (0, 0), final_attempts=4, backoff_max=0.05)
    assert reporter.finish(DownloadState("Verified", "Verified", "ok"))
    assert len(sink.patches) == 1


def test_final_report_gives_up_and_says_so() -> None:
    sink = RecordingSink(fail=10)
    reporter = Reporter(sink, "v1", 10, lambda: (0, 0), final_attempts=3, backoff_max=0.05)
    assert not reporter.finish(DownloadState("Verified", "Verified", "ok"))
    assert sink.patches == []
    assert threading.active_count() >= 1
