"""Versions an asset must keep on disk because agents serve them or may go back to them."""

from __future__ import annotations

import pytest

from voice_operator.plan.usage import versions_in_use

pytestmark = pytest.mark.unit


def internal(model: str, version: str) -> dict:
    return {"provider": "internal", "model": model, "modelVersion": version}


def agent(**components: dict) -> dict:
    return {"status": {"components": components}}


def test_serving_rollback_and_draining_versions_are_in_use():
    agents = [
        # Rolling out v3: v2 still serves and is the rollback target.
        agent(stt={**internal("whisper", "v2"), "lastGood": internal("whisper", "v2")}),
        # Switched to a vendor: the engine on v1 still drains.
        agent(
            stt={
                "provider": "external",
                "lastGood": {"provider": "external", "external": {"vendor": "deepgram"}},
                "draining": internal("whisper", "v1"),
            }
        ),
        # Another asset's versions are not this one's business.
        agent(stt=internal("whisper-large", "v9"), tts=internal("joe", "v4")),
        {"status": None},
        {},
    ]
    assert versions_in_use(agents, "whisper") == {"v1", "v2"}
    assert versions_in_use(agents, "joe") == {"v4"}
    assert versions_in_use([], "whisper") == frozenset()
