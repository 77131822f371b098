"""Which versions of an asset the agents need on disk (what serves now, and what a
rollback would go back to), and which agents hold it, from one pass over the agents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from voice_operator.api.voiceagent import COMPONENTS, VoiceAgentStatus
from voice_operator.observe import references


@dataclass(frozen=True)
class AssetUsage:
    versions: frozenset[str]  # versions some agent serves, may roll back to, or drains
    users: tuple[str, ...]  # agents that name the asset or hold one of its versions


def _held(agent: dict[str, Any]) -> set[tuple[str, str]]:
    """(asset, version) of what the agent serves, may roll back to, or still drains."""
    held: set[tuple[str, str]] = set()
    try:
        status = VoiceAgentStatus.model_validate(agent.get("status") or {})
    except ValidationError:
        # A status someone else wrote by hand: the agent's own reconcile rewrites it.
        return held
    for name in COMPONENTS:
        component = getattr(status.components, name)
        if component is None:
            continue
        # What rolls back to, and an engine still draining after a switch to a vendor.
        for rev in (component, component.last_good, component.draining):
            if rev and rev.model and rev.model_version:
                held.add((rev.model, rev.model_version))
    return held


def assets_of(agent: dict[str, Any]) -> set[str]:
    """The assets whose usage the agent decides: those its spec names and those its
    status still holds (a switch away leaves the old one held until it drains)."""
    return set(references(agent.get("spec") or {})[0]) | {a for a, _ in _held(agent)}


def _versions_of(agent: dict[str, Any], asset: str) -> set[str]:
    return {version for name, version in _held(agent) if name == asset}


def asset_usage(agents: list[dict[str, Any]], asset: str) -> AssetUsage:
    """While an agent is among the users, the asset may not go."""
    versions: set[str] = set()
    users = []
    for agent in agents:
        held = _versions_of(agent, asset)
        versions |= held
        if held or asset in references(agent.get("spec") or {})[0]:
            users.append(agent["metadata"]["name"])
    return AssetUsage(frozenset(versions), tuple(sorted(users)))
