"""Kubernetes operator for self-hosted voice agents."""

from voice_contracts import API_VERSION, GROUP, VERSION

__all__ = ["API_VERSION", "FIELD_MANAGER", "GROUP", "VERSION"]

FIELD_MANAGER = "voice-operator"
