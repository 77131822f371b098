"""The filesystem and network layout shared by the operator's pod templates and the
programs inside them."""

from __future__ import annotations

# Every engine and the gateway listen here; Services target it by name ("http").
PORT = 8080

# A ModelAsset's PVC, mounted read-only in engines and read-write in its Jobs.
MODELS_MOUNT = "/models"

# The fetcher's own files in a version folder; a model file may not take these names.
MANIFEST_NAME = ".manifest.json"
LOCK_NAME = ".fetch.lock"
PART_SUFFIX = ".part"
# Beside a .part: the SHA-256 state of its first bytes, so a resume reads none of them again.
PART_STATE_SUFFIX = ".part.sha256-state"
RESERVED_NAMES = frozenset({MANIFEST_NAME, LOCK_NAME, MANIFEST_NAME + ".tmp"})

# The gateway's routes ConfigMap, mounted as a directory (kubelet swaps the file in place).
ROUTES_DIR = "/etc/voiceops/routes"
ROUTES_FILE = "routes.json"
ROUTES_PATH = f"{ROUTES_DIR}/{ROUTES_FILE}"

# Vendor keys, one projected Secret item per stage (and per fallback).
KEY_DIR = "/var/run/secrets/voiceops"

# The gateway's own API keys (spec.gateway.auth): the whole Secret, one file per key.
AUTH_DIR = "/var/run/secrets/voiceops-auth"


def version_folder(asset: str, version: str) -> str:
    """Where a version lives inside its asset's PVC: /<asset>/<version>."""
    return f"/{asset}/{version}"


def version_path(asset: str, version: str) -> str:
    """The version folder as a pod sees it, under the models mount."""
    return MODELS_MOUNT + version_folder(asset, version)


def key_path(slot: str) -> str:
    """The gateway's file holding one key; slot is a stage, or <stage>-fallback."""
    return f"{KEY_DIR}/{slot}/api-key"


def key_item_path(slot: str) -> str:
    """The same file relative to KEY_DIR: the path of the projected Secret item."""
    return f"{slot}/api-key"
