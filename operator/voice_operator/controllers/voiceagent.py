"""VoiceAgent reconcile (work in progress)."""

from __future__ import annotations

from voice_operator.kube import Kube
from voice_operator.settings import OperatorSettings
from voice_operator.workqueue import Key


def reconcile_voice_agent(kube: Kube, settings: OperatorSettings, key: Key) -> float | None:
    return None
