"""Conditions set by one helper; Events for their transitions."""

from __future__ import annotations

import datetime

import pytest

from voice_operator.conditions import set_condition, transition_events

pytestmark = pytest.mark.unit
T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def test_transition_time_moves_only_when_the_status_changes():
    [c] = set_condition([], "Ready", "False", "Downloading", "10%", 1, T0)
    assert c.last_transition_time == T0
    [c] = set_condition([c], "Ready", "False", "Downloading", "50%", 2, T1)
    assert (c.last_transition_time, c.message, c.observed_generation) == (T0, "50%", 2)
    [c] = set_condition([c], "Ready", "True", "Verified", "ok", 2, T1)
    assert c.last_transition_time == T1


def test_events_for_changes_warning_for_bad_news():
    before = set_condition([], "Degraded", "False", "AsExpected", "", 1, T0)
    after = set_condition(before, "Degraded", "True", "CrashLoop", "stt: pod crashed", 1, T1)
    after = set_condition(after, "Ready", "True", "Serving", "all good", 1, T1)
    events = transition_events(before, after)
    assert [(e.type, e.reason) for e in events] == [("Warning", "CrashLoop"), ("Normal", "Serving")]
    assert transition_events(after, after) == []


def test_a_new_object_starting_out_not_ready_is_no_news():
    after = set_condition([], "Ready", "False", "Downloading", "", 1, T0)
    assert transition_events([], after) == []
