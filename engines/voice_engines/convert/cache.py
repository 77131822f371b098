"""Converted models cached outside the repo, keyed by the source weights' sha256, so a
changed source model never reuses a stale conversion."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from voice_engines.convert.ct2_to_ggml import convert


def cache_root() -> Path:
    return Path(os.environ.get("VOICE_OPERATOR_CACHE") or Path.home() / ".cache" / "voice-operator")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cached_ggml(model_dir: Path, cache_dir: Path | None = None) -> Path:
    """The ggml conversion of a CTranslate2 Whisper model, converting only on a miss."""
    key = sha256_of(Path(model_dir) / "model.bin")[:16]
    target = (cache_dir or cache_root() / "models") / f"whisper-ggml-{key}.bin"
    if not target.exists():
        convert(Path(model_dir), target)
    return target
