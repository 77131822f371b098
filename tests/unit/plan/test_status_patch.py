"""Status goes out as a JSON merge patch: only what changed, and nulls for what went away
at any depth (a merge patch merges nested objects)."""

from __future__ import annotations

import datetime

import pytest

from voice_operator.plan import apply_failure, status_patch

pytestmark = pytest.mark.unit


def test_nothing_changed_is_no_patch():
    status = {"phase": "Ready", "components": {"llm": {"revision": "a"}}}
    assert status_patch(status, status) is None


def test_a_field_cleared_deep_inside_is_sent_as_null():
    before = {
        "observedGeneration": 2,
        "components": {"llm": {"revision": "a", "draining": {"model": "m"}, "history": [1, 2]}},
        "gateway": {"url": "u"},
    }
    after = {
        "observedGeneration": 3,
        "components": {"llm": {"revision": "a", "history": [1]}},
    }
    assert status_patch(before, after) == {
        "status": {
            "observedGeneration": 3,
            "components": {"llm": {"draining": None, "history": [1]}},
            "gateway": None,
        }
    }


def test_a_refused_child_makes_the_owner_degraded_once():
    now = datetime.datetime(2026, 12, 2, 2, 0, tzinfo=datetime.UTC)
    ready = {"type": "Ready", "status": "True", "reason": "Serving", "message": ""}
    patch, events = apply_failure(
        {"conditions": [ready]}, 3, "Service a-stt", "422 Invalid: spec.ports", now
    )
    assert patch is not None
    conditions = {c["type"]: c for c in patch["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True"  # what serves keeps serving
    degraded = conditions["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "ApplyFailed")
    assert degraded["message"] == "Service a-stt: 422 Invalid: spec.ports"
    assert patch["status"]["observedGeneration"] == 3
    assert [(e.type, e.reason) for e in events] == [("Warning", "ApplyFailed")]
    # The same refusal again: nothing to write, nothing to tell.
    again, events = apply_failure(
        {"conditions": patch["status"]["conditions"], "observedGeneration": 3},
        3,
        "Service a-stt",
        "422 Invalid: spec.ports",
        now,
    )
    assert again is None
    assert events == []
