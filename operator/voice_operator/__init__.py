"""Kubernetes operator for self-hosted voice agents."""

GROUP = "voiceops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "voice-operator"
