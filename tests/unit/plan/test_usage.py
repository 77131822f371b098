"""Versions an asset must keep on disk because agents serve them or may go back to them."""

from __future__ import annotations

import pytest

from voice_operator.plan.usage import asset_usage, assets_of

pytestmark = pytest.mark.unit


def internal(model: str, version: str) -> dict:
    return {"provider": "internal", "model": model, "modelVersion": version}


def agent(name: str = "a", spec: dict | None = None, **components: dict) -> dict:
    return {"metadata": {"name": name}, "spec": spec or {}, "status": {"components": components}}


def test_serving_rollback_and_draining_versions_are_in_use():
    agents = [
        # Rolling out v3: v2 still serves and is the rollback target.
        agent("rolling", stt={**internal("whisper", "v2"), "lastGood": internal("whisper", "v2")}),
        # Switched to a vendor: the engine on v1 still drains.
        agent(
            "switched",
            stt={
                "provider": "external",
                "lastGood": {"provider": "external", "external": {"vendor": "deepgram"}},
                "draining": internal("whisper", "v1"),
            },
        ),
        # Another asset's versions are not this one's business.
        agent("other", stt=internal("whisper-large", "v9"), tts=internal("joe", "v4")),
        {"metadata": {"name": "new"}, "status": None},
        {"metadata": {"name": "empty"}},
    ]
    assert asset_usage(agents, "whisper").versions == {"v1", "v2"}
    assert asset_usage(agents, "whisper").users == ("rolling", "switched")
    assert asset_usage(agents, "joe").versions == {"v4"}
    assert asset_usage([], "whisper").versions == frozenset()


def test_an_agent_that_only_names_the_asset_holds_it():
    named = agent("fresh", spec={"stt": {"provider": "internal", "model": "whisper"}})
    usage = asset_usage([named], "whisper")
    assert (usage.versions, usage.users) == (frozenset(), ("fresh",))


def test_the_assets_an_agent_decides_include_what_its_status_still_holds():
    switched = agent(
        "switched",
        spec={"stt": {"provider": "external"}, "tts": {"provider": "internal", "model": "joe"}},
        stt={"provider": "external", "draining": internal("whisper", "v1")},
    )
    assert assets_of(switched) == {"joe", "whisper"}


def test_a_status_written_by_hand_holds_nothing():
    assert asset_usage([{"metadata": {"name": "x"}, "status": {"components": 3}}], "w").users == ()
