"""A ModelAsset as a VoiceAgent's plan sees it once a version is Ready, for the tests that
plan or render agents with the operator's pure functions."""

from __future__ import annotations

from typing import Any


def file_asset_spec(engine: str, fmt: str, main: str, version: str = "v1") -> dict[str, Any]:
    """A spec with placeholder files: `main`, and for a Piper voice its .json beside it."""
    files = [{"url": "https://h/f", "sha256": "a" * 64, "path": main}]
    if fmt == "onnx":
        files.append({"url": "https://h/j", "sha256": "b" * 64, "path": main + ".json"})
    return {
        "engine": engine,
        "format": fmt,
        "version": version,
        "files": files,
        "storage": {"size": "1Gi"},
    }


def ready_asset(name: str, spec: dict[str, Any], main: str) -> dict[str, Any]:
    """`spec.version` is the asset's current and only Ready version."""
    version = spec["version"]
    return {
        "metadata": {"name": name},
        "spec": spec,
        "status": {
            "currentVersion": version,
            "claimName": f"{name}-models",
            "versions": [
                {
                    "version": version,
                    "path": f"/{name}/{version}",
                    "mainFile": main,
                    "format": spec["format"],
                }
            ],
        },
    }
