"""All files of one version into its folder, then the manifest as the commit mark."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from voice_contracts.fetch import FetchSpec
from voice_contracts.layout import MANIFEST_NAME
from voice_fetch.disk import (
    folder_lock,
    is_within,
    remove_durably,
    sha256_file,
)
from voice_fetch.download import Downloader, OriginHeader, make_client
from voice_fetch.errors import InvalidSpecError
from voice_fetch.manifest import FileRecord, read_manifest, write_manifest
from voice_fetch.progress import Progress

log = logging.getLogger(__name__)


def lock_timeout(spec: FetchSpec) -> float:
    # Long enough for a terminating predecessor pod to notice its stall timeout and exit.
    return 2 * spec.stall_timeout + 30


def final_path(dest: Path, index: int, rel: str) -> Path:
    final = dest / rel
    # The spec's paths are checked as text; a symlink already in the folder could still
    # lead outside it.
    if not is_within(final, dest):
        raise InvalidSpecError(f"spec.files[{index}].path", f"{rel!r} resolves outside {dest}")
    return final


def verified_present(final: Path, sha256: str) -> int | None:
    """Size of the file at its final name if its digest matches, else None."""
    if not final.is_file():
        return None
    digest, size = sha256_file(final)
    if digest == sha256:
        return size
    # Only a verified file is ever renamed to a final name, so this one was changed
    # behind our back or the spec's digest was: fetch it again.
    log.warning("%s does not match its sha256; fetching it again", final)
    remove_durably(final)
    return None


def fetch_version(
    spec: FetchSpec,
    progress: Progress,
    on_state: Callable[[str], None],
) -> list[FileRecord]:
    """Fetch every missing file; returns the manifest's records. A folder that is already
    complete costs only the local re-hash: no network I/O."""
    dest = spec.dest
    dest.mkdir(parents=True, exist_ok=True)
    with folder_lock(dest, lock_timeout(spec)):
        records: list[FileRecord | None] = []
        finals = [final_path(dest, i, f.path) for i, f in enumerate(spec.files)]
        on_state("checking files already present")
        for i, (f, final) in enumerate(zip(spec.files, finals, strict=True)):
            size = verified_present(final, f.sha256)
            records.append(FileRecord(f.path, f.sha256, size) if size is not None else None)
            if size is not None:
                progress.set_total(i, size)
                progress.complete(i, size)

        missing = [i for i, r in enumerate(records) if r is None]
        if missing:
            # The folder is about to change: it must not look complete meanwhile.
            remove_durably(dest / MANIFEST_NAME)
            auth = OriginHeader()
            needs_http = any(spec.files[i].scheme in ("http", "https", "hf") for i in missing)
            with contextlib.ExitStack() as stack:
                client = stack.enter_context(make_client(spec)) if needs_http else None
                downloader = Downloader(spec, progress, client, auth, on_retry=on_state)
                for n, i in enumerate(missing, 1):
                    f = spec.files[i]
                    on_state(f"fetching {f.path} ({n}/{len(missing)})")
                    records[i] = downloader.fetch(i, f, finals[i])
                if downloader.rehashed_bytes:
                    log.info(
                        "re-hashed %d bytes of earlier partial downloads before resuming",
                        downloader.rehashed_bytes,
                    )

        done = [r for r in records if r is not None]
        current = read_manifest(dest)
        if current != (spec.version, done):
            on_state("writing the manifest")
            write_manifest(dest, spec.version, done, datetime.now(UTC))
        return done
