"""Which device an engine's model runs on: the setting (auto, cpu, cuda) against what the
library found at load time."""

from __future__ import annotations

from typing import Literal

from voice_contracts.env import Device


def resolve_device(wanted: Device | None, gpu_usable: bool, setting: str) -> Literal["cpu", "cuda"]:
    """auto (or None) takes the GPU when there is a usable one; cuda without one is an error naming
    the setting, so the pod fails to load (and rolls back) rather than silently running on
    the CPU."""
    if wanted == "cuda" and not gpu_usable:
        raise RuntimeError(
            f"{setting}=cuda, but no CUDA device is usable (none visible, or the library "
            "was built without CUDA: use the engine image's CUDA variant)"
        )
    if wanted in (None, "auto"):
        return "cuda" if gpu_usable else "cpu"
    return "cpu" if wanted == "cpu" else "cuda"
