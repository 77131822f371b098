"""Shared building blocks of the engine services (and the gateway): app wiring, the
error shape, JSON logs with correlation ids, metrics, the bounded inference executor and
audio helpers."""
