"""The manifest: the commit mark of a version folder, written last, atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voice_contracts.layout import LOCK_NAME, MANIFEST_NAME, PART_STATE_SUFFIX, PART_SUFFIX
from voice_fetch.disk import atomic_write, sha256_file


@dataclass(frozen=True)
class FileRecord:
    path: str
    sha256: str
    bytes: int


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest_document(
    version: str, files: list[FileRecord], completed_at: datetime
) -> dict[str, Any]:
    return {
        "version": version,
        "files": [asdict(f) for f in files],
        "completedAt": rfc3339(completed_at),
    }


def write_manifest(
    dest: Path, version: str, files: list[FileRecord], completed_at: datetime
) -> Path:
    path = dest / MANIFEST_NAME
    doc = manifest_document(version, files, completed_at)
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
    return path


def read_manifest(dest: Path) -> tuple[str, list[FileRecord]] | None:
    """(version, files) of the manifest, or None when absent or unreadable."""
    try:
        doc = json.loads((dest / MANIFEST_NAME).read_text())
        files = [
            FileRecord(str(f["path"]), str(f["sha256"]), int(f["bytes"])) for f in doc["files"]
        ]
        return str(doc["version"]), files
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_fetcher_file(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return (
        rel in (MANIFEST_NAME, MANIFEST_NAME + ".tmp", LOCK_NAME)
        or name.endswith((PART_SUFFIX, PART_STATE_SUFFIX, PART_STATE_SUFFIX + ".tmp"))
        # Ollama's own in-progress blobs: sha256-<hex>-partial and -partial-<n>.
        or "-partial" in name
    )


def scan_tree(dest: Path) -> list[FileRecord]:
    """Every regular file under `dest` but the fetcher's own, hashed, sorted by path."""
    records = []
    for path in sorted(p for p in dest.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(dest).as_posix()
        if _is_fetcher_file(rel):
            continue
        digest, size = sha256_file(path)
        records.append(FileRecord(rel, digest, size))
    return records
