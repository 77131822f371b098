"""Stable hashes of API values: the revision of a stage, the source of a version."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Long enough to never collide within one agent's bounded history, short enough to read.
REVISION_LENGTH = 10


def canonical(value: Any) -> Any:
    """The value as the apiserver will give it back."""
    # The apiserver stores 1.0 as 1: a value read back from status must hash the same.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def short_hash(value: Any, length: int) -> str:
    """A stable hash of any JSON-able value (key order and 1 vs 1.0 do not matter)."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def revision_hash(value: Any) -> str:
    """The revision of what a stage runs: the one function every caller uses."""
    return short_hash(value, REVISION_LENGTH)
