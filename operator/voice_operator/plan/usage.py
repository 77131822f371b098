"""Which versions of an asset the agents need on disk (what serves now, and what a
rollback would go back to), and which agents hold it, from one pass over the agents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voice_operator.api.voiceagent import COMPONENTS, VoiceAgentStatus
from voice_operator.observe import references


@dataclass(frozen=True)
class AssetUsage:
    versions: frozenset[str]  # versions some agent serves, may roll back to, or drains
    users: tuple[str, ...]  # agents that name the asset or hold one of its versions


def _versions_of(agent: dict[str, Any], asset: str) -> set[str]:
    used: set[str] = set()
    status = VoiceAgentStatus.model_validate(agent.get("status") or {})
    for name in COMPONENTS:
        component = getattr(status.components, name)
        if component is None:
            continue
        if component.model == asset and component.model_version:
            used.add(component.model_version)
        # What rolls back to, and an engine still draining after a switch to a vendor.
        for rev in (component.last_good, component.draining):
            if rev and rev.model == asset and rev.model_version:
                used.add(rev.model_version)
    return used


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
