"""Which versions of an asset the agents need on disk: what serves now, and what a
rollback would go back to."""

from __future__ import annotations

from typing import Any

from voice_operator.api.voiceagent import COMPONENTS, VoiceAgentStatus
from voice_operator.observe import references


def versions_in_use(agents: list[dict[str, Any]], asset: str) -> frozenset[str]:
    used: set[str] = set()
    for agent in agents:
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
    return frozenset(used)


def agents_using(agents: list[dict[str, Any]], asset: str) -> tuple[str, ...]:
    """The agents that name the asset in their spec or serve (or may roll back to) one of
    its versions: while there is one, the asset may not go."""
    users = []
    for agent in agents:
        named = references(agent.get("spec") or {})[0]
        if asset in named or versions_in_use([agent], asset):
            users.append(agent["metadata"]["name"])
    return tuple(sorted(users))
