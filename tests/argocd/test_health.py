"""The Argo CD health scripts in examples/argocd, run in a real Lua 5.1 the way Argo runs
them, against every combination of condition statuses the status types can hold."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pytest
import verdicts
from luakit import INVALID, health, run
from lupa.lua51 import LuaError, LuaSyntaxError
from verdicts import Cond

from voice_operator.api.common import Condition
from voice_operator.api.modelasset import ModelAssetStatus, Progress
from voice_operator.api.voiceagent import ComponentsStatus, ComponentStatus, VoiceAgentStatus

pytestmark = pytest.mark.unit

T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)
VALUES = ("True", "False", "Unknown", None)  # None: the condition is not in the list
AGENT_TYPES = ("Ready", "Progressing", "Degraded", "RolledBack")
ASSET_TYPES = ("Ready", "Downloading", "Failed")
GENERATION = 2
SERVING = "stt internal whisper@v1, llm internal smollm@v1, tts external elevenlabs"

# How the status relates to metadata.generation (2):
#   fresh      status and conditions are for generation 2
#   unstamped  status for 2, conditions without observedGeneration (metav1 allows it)
#   stale      the operator has not observed generation 2 yet (status and conditions at 1)
#   leftover   status for 2, but these conditions were last set at 1, so they don't count
FRESHNESS = {
    "fresh": (GENERATION, GENERATION),
    "unstamped": (GENERATION, None),
    "stale": (1, 1),
    "leftover": (GENERATION, 1),
}


def conditions(types: tuple[str, ...], combo: tuple[str | None, ...], stamp: int | None):
    return [
        Condition(
            type=t,
            status=value,
            reason=f"{t}{value}",
            message=f"{t} is {value}",
            observed_generation=stamp,
            last_transition_time=T0,
        )
        for t, value in zip(types, combo, strict=True)
        if value is not None
    ]


def counted(types: tuple[str, ...], combo: tuple[str | None, ...]) -> dict[str, Cond]:
    return {
        t: Cond(value, f"{t}{value}", f"{t} is {value}")
        for t, value in zip(types, combo, strict=True)
        if value is not None
    }


def resource(kind: str, status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "voiceops.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "support", "namespace": "voice", "generation": GENERATION},
        "status": status.wire(),
    }


def combo_id(types: tuple[str, ...], combo: tuple[str | None, ...]) -> str:
    return ",".join(f"{t}={v or 'absent'}" for t, v in zip(types, combo, strict=True))


def expected(freshness: str, fresh_verdict: dict[str, str]) -> dict[str, str]:
    observed, stamp = FRESHNESS[freshness]
    if observed < GENERATION:
        return verdicts.not_observed(GENERATION, observed)
    if stamp is not None and stamp < GENERATION:
        return verdicts.WAITING_FOR_READY
    return fresh_verdict


AGENT_COMBOS = list(itertools.product(VALUES, repeat=len(AGENT_TYPES)))
ASSET_COMBOS = list(itertools.product(VALUES, repeat=len(ASSET_TYPES)))


@pytest.mark.parametrize("freshness", FRESHNESS)
@pytest.mark.parametrize(
    "combo", AGENT_COMBOS, ids=[combo_id(AGENT_TYPES, c) for c in AGENT_COMBOS]
)
def test_voiceagent_verdict_for_every_condition_combination(combo, freshness):
    observed, stamp = FRESHNESS[freshness]
    status = VoiceAgentStatus(
        conditions=conditions(AGENT_TYPES, combo, stamp),
        components=ComponentsStatus(
            stt=ComponentStatus(provider="internal", serving="internal whisper@v1"),
            llm=ComponentStatus(provider="internal", serving="internal smollm@v1"),
            tts=ComponentStatus(provider="external", serving="external elevenlabs"),
        ),
        observed_generation=observed,
    )
    want = expected(freshness, verdicts.voiceagent(counted(AGENT_TYPES, combo), SERVING))
    assert health("VoiceAgent", resource("VoiceAgent", status)) == want


@pytest.mark.parametrize("freshness", FRESHNESS)
@pytest.mark.parametrize(
    "combo", ASSET_COMBOS, ids=[combo_id(ASSET_TYPES, c) for c in ASSET_COMBOS]
)
def test_modelasset_verdict_for_every_condition_combination(combo, freshness):
    observed, stamp = FRESHNESS[freshness]
    status = ModelAssetStatus(
        conditions=conditions(ASSET_TYPES, combo, stamp),
        progress=Progress(done_bytes=420, total_bytes=1000, percent=42),
        observed_generation=observed,
    )
    want = expected(freshness, verdicts.modelasset(counted(ASSET_TYPES, combo), percent=42))
    assert health("ModelAsset", resource("ModelAsset", status)) == want


# The rows of the README's table that are not about condition statuses alone.
@pytest.mark.parametrize("kind", ["VoiceAgent", "ModelAsset"])
@pytest.mark.parametrize(
    ("obj", "want"),
    [
        pytest.param(
            {"metadata": {"generation": 1}},
            verdicts.not_observed(1, None),
            id="no status yet",
        ),
        pytest.param(
            {"metadata": {"generation": 1}, "status": {}},
            verdicts.not_observed(1, None),
            id="empty status",
        ),
        pytest.param(
            {
                "metadata": {"generation": 3},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "X"}]},
            },
            verdicts.not_observed(3, None),
            id="conditions but no observedGeneration",
        ),
        pytest.param(
            {"metadata": {"generation": 3}, "status": {"observedGeneration": 3}},
            verdicts.WAITING_FOR_READY,
            id="observed, no conditions",
        ),
        pytest.param(
            {"metadata": {"generation": 3}, "status": {"observedGeneration": 3, "conditions": []}},
            verdicts.WAITING_FOR_READY,
            id="observed, empty conditions",
        ),
        pytest.param(
            {"metadata": {}, "status": {}},
            {"status": "Progressing", "message": "waiting for the operator to observe the spec"},
            id="no generation at all",
        ),
        pytest.param(
            {"metadata": {"generation": 2}, "status": {"observedGeneration": 5}},
            verdicts.WAITING_FOR_READY,
            id="observedGeneration ahead of a cached object",
        ),
    ],
)
def test_objects_the_operator_has_not_described_yet(kind, obj, want):
    assert health(kind, {"apiVersion": "voiceops.dev/v1alpha1", "kind": kind, **obj}) == want


def test_invalid_spec_degrades_even_with_an_older_progressing_condition_left_over():
    # The invalid-spec path sets only Ready and Degraded; Progressing keeps generation 1.
    status = VoiceAgentStatus(
        conditions=[
            Condition(
                type="Ready",
                status="False",
                reason="InvalidSpec",
                message="spec.stt: x",
                observed_generation=2,
            ),
            Condition(
                type="Progressing",
                status="True",
                reason="RollingOut",
                message="stt: y",
                observed_generation=1,
            ),
            Condition(
                type="Degraded",
                status="True",
                reason="InvalidSpec",
                message="spec.stt: x",
                observed_generation=2,
            ),
        ],
        observed_generation=2,
    )
    assert health("VoiceAgent", resource("VoiceAgent", status)) == {
        "status": "Degraded",
        "message": "InvalidSpec: spec.stt: x",
    }


@pytest.mark.parametrize(
    ("progress", "suffix"),
    [
        (None, ""),
        (Progress(done_bytes=0, total_bytes=0, percent=0), ""),  # size not known yet
        (Progress(done_bytes=1, total_bytes=3, percent=33), " (33%)"),
        (Progress(done_bytes=3, total_bytes=3, percent=100), " (100%)"),
    ],
)
def test_download_progress_shows_only_once_the_size_is_known(progress, suffix):
    status = ModelAssetStatus(
        phase="Downloading",
        conditions=[
            Condition(
                type="Downloading",
                status="True",
                reason="Downloading",
                message="downloading version v2",
                observed_generation=2,
            ),
        ],
        progress=progress,
        observed_generation=2,
    )
    assert health("ModelAsset", resource("ModelAsset", status)) == {
        "status": "Progressing",
        "message": "Downloading: downloading version v2" + suffix,
    }


def test_the_sandbox_is_argos_not_stock_lua():
    """Proof that the runner would catch a script Argo cannot run."""
    with pytest.raises(LuaError, match="global 'string'"):
        run('return {status = "Healthy", message = string.format("%d", 1)}', {})
    with pytest.raises(LuaError, match="index a string value"):
        run('return {status = "Healthy", message = ("x"):upper()}', {})
    with pytest.raises(LuaError, match="module 'string' not found"):
        run('return {status = "Healthy", message = require("string").upper("x")}', {})
    with pytest.raises(LuaError, match="global 'math'"):
        run('return {status = "Healthy", message = tostring(math.floor(1.5))}', {})
    with pytest.raises(LuaError, match="global 'io'"):
        run('return {status = "Healthy", message = io.read()}', {})
    with pytest.raises(LuaSyntaxError):  # goto is Lua 5.2
        run('goto done\n::done::\nreturn {status = "Healthy"}', {})
    with pytest.raises(LuaSyntaxError):  # // is Lua 5.3
        run('return {status = "Healthy", message = tostring(7 // 2)}', {})
    assert run('return {status = "Fine"}', {}) == INVALID
    assert run('return {status = "Healthy", message = "a" .. 1 .. tostring(2.0)}', {}) == {
        "status": "Healthy",
        "message": "a12",
    }
