"""Statuses the cluster tests do not reach, made by the operator's own planners from a
captured status, so they are exactly what the operator would write.

An invalid spec is one: the CRD's CEL rules reject it at the apiserver, and the operator
handles one only when CEL did not run (an older CRD, a rule CEL cannot express). Run this
file to rewrite tests/argocd/constructed/; a test checks the files match.
"""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

from voice_operator.observe import observe_agent, observe_asset
from voice_operator.plan.modelasset import plan_model_asset
from voice_operator.plan.voiceagent import plan_voice_agent
from voice_operator.render.meta import Owner
from voice_operator.settings import OperatorSettings

HERE = Path(__file__).parent
CAPTURED = HERE / "captured"
CONSTRUCTED = HERE / "constructed"
# After the captured statuses, so transition times read in order.
NOW = datetime.datetime(2026, 11, 24, 19, 0, tzinfo=datetime.UTC)


def _load(name: str) -> dict[str, Any]:
    return json.loads((CAPTURED / f"{name}.json").read_text())


def _next_generation(obj: dict[str, Any], spec: dict[str, Any], patch: Any) -> dict[str, Any]:
    status = dict(obj.get("status") or {})
    for key, value in ((patch or {}).get("status") or {}).items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    meta = {**obj["metadata"], "generation": obj["metadata"]["generation"] + 1}
    return {**obj, "metadata": meta, "spec": spec, "status": status}


def agent_invalid_spec() -> dict[str, Any]:
    """A serving agent edited to an internal stt without a model."""
    before = _load("agent-ready")
    spec = copy.deepcopy(before["spec"])
    spec["stt"] = {"provider": "internal"}
    obs = observe_agent(
        owner=Owner("VoiceAgent", before["metadata"]["name"], "voice", "uid-agent"),
        generation=before["metadata"]["generation"] + 1,
        spec=spec,
        status=before["status"],
        assets={},
        secrets={},
        deployments={},
        pods=[],
        autoscaled=frozenset(),
        probes={},
        now=NOW,
    )
    return _next_generation(before, spec, plan_voice_agent(obs, OperatorSettings()).status_patch)


def asset_invalid_spec() -> dict[str, Any]:
    """A Ready Piper voice edited to a format tts cannot serve."""
    before = _load("asset-ready")
    spec = copy.deepcopy(before["spec"])
    spec["format"] = "gguf"
    obs = observe_asset(
        owner=Owner("ModelAsset", before["metadata"]["name"], "voice", "uid-asset"),
        generation=before["metadata"]["generation"] + 1,
        spec=spec,
        status=before["status"],
        jobs=[],
        versions_in_use=frozenset(),
        now=NOW,
    )
    return _next_generation(before, spec, plan_model_asset(obs, OperatorSettings()).status_patch)


def build() -> dict[str, dict[str, Any]]:
    return {
        "agent-invalid-spec": agent_invalid_spec(),
        "asset-invalid-spec": asset_invalid_spec(),
    }


def dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    CONSTRUCTED.mkdir(exist_ok=True)
    for name, obj in build().items():
        (CONSTRUCTED / f"{name}.json").write_text(dump(obj))
