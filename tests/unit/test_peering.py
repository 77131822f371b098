"""kopf's peering rule as the work queue's gate applies it."""

from __future__ import annotations

import datetime

import pytest

from voice_operator.peering import blocking_peers

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 12, 2, 8, 0, 0, tzinfo=datetime.UTC)


def entry(priority: int, seconds_ago: float = 1, lifetime: int = 60) -> dict:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_a_live_peer_of_higher_or_equal_priority_blocks():
    status = {"me": entry(-5), "older": entry(-1), "twin": entry(-5), "younger": entry(-9)}
    assert blocking_peers(status, "me", -5, NOW) == ["older", "twin"]


def test_kopf_freeze_blocks_until_its_lifetime_ends():
    status = {"me": entry(-5), "freeze": entry(100, seconds_ago=100, lifetime=120)}
    assert blocking_peers(status, "me", -5, NOW) == ["freeze"]
    later = NOW + datetime.timedelta(seconds=21)
    assert blocking_peers(status, "me", -5, later) == []


def test_dead_peers_and_unreadable_entries_do_not_block():
    status = {
        "dead": entry(10, seconds_ago=61),
        "garbled": {"priority": "high", "lastseen": "yesterday"},
        "not-a-peer": "x",
        # kopf counts an entry without lastseen as seen now.
        "fresh": {"priority": 1},
        "naive": {"priority": 1, "lastseen": "2026-12-02T07:59:30", "lifetime": 60},
    }
    assert blocking_peers(status, "me", 0, NOW) == ["fresh", "naive"]
    assert blocking_peers({}, "me", 0, NOW) == []
