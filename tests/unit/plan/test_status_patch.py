"""Status goes out as a JSON merge patch: only what changed, and nulls for what went away
at any depth (a merge patch merges nested objects)."""

from __future__ import annotations

import pytest

from voice_operator.plan import status_patch

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
