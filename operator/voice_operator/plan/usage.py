"""Which versions of an asset the agents need on disk: what serves now, and what a
rollback would go back to."""

from __future__ import annotations

from typing import Any

from voice_operator.api.voiceagent import COMPONENTS, VoiceAgentStatus


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
            good = component.last_good
            if good and good.model == asset and good.model_version:
                used.add(good.model_version)
    return frozenset(used)
