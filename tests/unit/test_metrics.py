"""The operator's download and rollout counters follow the Events of transitions."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from voice_operator.conditions import EventSpec
from voice_operator.metrics import count_events

pytestmark = pytest.mark.unit


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_download_transitions_are_counted_once_each():
    before = {
        o: value("voice_operator_downloads_total", outcome=o)
        for o in ("started", "ready", "failed")
    }
    count_events(
        "ModelAsset",
        [
            EventSpec("Normal", "JobCreated", "Downloading=True: …", "Downloading=True"),
            # Still downloading, another reason: not a new download.
            EventSpec("Normal", "Downloading", "Downloading=True: …", "Downloading=True"),
            EventSpec("Normal", "Verified", "Ready=True: …", "Ready=True"),
            EventSpec("Warning", "ChecksumMismatch", "Failed=True: …", "Failed=True"),
            EventSpec("Normal", "VersionsPruned", "deleted versions v1"),
        ],
    )
    after = {o: value("voice_operator_downloads_total", outcome=o) for o in before}
    assert {o: after[o] - before[o] for o in before} == {"started": 1, "ready": 1, "failed": 1}


def test_rollout_events_count_rollouts_and_rollbacks_per_stage():
    def snapshot() -> tuple[float, ...]:
        return (
            value("voice_operator_rollouts_total", component="tts", outcome="started"),
            value("voice_operator_rollouts_total", component="tts", outcome="succeeded"),
            value("voice_operator_rollouts_total", component="tts", outcome="failed"),
            value("voice_operator_rollbacks_total", component="tts"),
        )

    before = snapshot()
    count_events(
        "VoiceAgent",
        [
            EventSpec("Normal", "RolloutStarted", "tts: …", component="tts"),
            EventSpec("Warning", "RolledBack", "tts revision … failed", component="tts"),
            EventSpec("Normal", "RolloutStarted", "tts: …", component="tts"),
            EventSpec("Warning", "RolloutFailed", "… not rolled back", component="tts"),
            EventSpec("Normal", "RolloutSucceeded", "tts revision … serving", component="tts"),
            # A condition's Event on the agent is not a rollout of its own.
            EventSpec("Warning", "RolledBack", "RolledBack=True: …", "RolledBack=True"),
        ],
    )
    after = snapshot()
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (2, 1, 2, 1)
