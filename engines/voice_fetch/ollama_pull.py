"""Format `ollama`: run `ollama serve` with its model store in the version folder, pull
the model through it, stop it, and describe what it wrote in the manifest."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from voice_contracts.fetch import FetchSpec
from voice_contracts.layout import MANIFEST_NAME
from voice_fetch.disk import folder_lock, remove_durably
from voice_fetch.errors import FetchError, Reason
from voice_fetch.manifest import FileRecord, read_manifest, scan_tree, write_manifest
from voice_fetch.progress import Progress
from voice_fetch.version_folder import lock_timeout

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class _NotReadyError(Exception):
    pass


def find_ollama(configured: str | None) -> str:
    binary = configured or shutil.which("ollama")
    if not binary or not os.access(binary, os.X_OK):
        raise FetchError(
            Reason.OLLAMA_PULL_FAILED,
            f"the ollama binary was not found ({configured or 'ollama on PATH'})",
        )
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def ollama_server(binary: str, models: Path, ready_timeout: float = READY_TIMEOUT) -> Iterator[str]:
    """`ollama serve` on a free loopback port with OLLAMA_MODELS=`models`; yields its URL."""
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OLLAMA_MODELS": str(models), "OLLAMA_HOST": f"127.0.0.1:{port}"}
    # Its logs go to stderr: stdout carries only our JSON status lines.
    proc = subprocess.Popen(
        [binary, "serve"], env=env, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True
    )
    log.info("started ollama serve (pid %d) on %s", proc.pid, host)
    try:
        _wait_ready(proc, host, ready_timeout)
        yield host
    finally:
        stop_process(proc)


def _wait_ready(proc: subprocess.Popen[bytes], host: str, timeout: float) -> None:
    def probe() -> None:
        code = proc.poll()
        if code is not None:
            raise FetchError(
                Reason.OLLAMA_PULL_FAILED, f"ollama serve exited with code {code} at start"
            )
        try:
            httpx.get(f"{host}/api/version", timeout=2.0).raise_for_status()
        except httpx.HTTPError as exc:
            raise _NotReadyError(str(exc)) from None

    try:
        Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_fixed(0.1),
            retry=retry_if_exception_type(_NotReadyError),
            reraise=True,
        )(probe)
    except _NotReadyError:
        raise FetchError(
            Reason.OLLAMA_PULL_FAILED, f"ollama serve did not answer within {timeout:g}s"
        ) from None


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("ollama serve ignored SIGTERM for %gs; killing it", STOP_TIMEOUT)
        proc.kill()
        proc.wait()


def pull(
    host: str,
    model: str,
    progress: Progress,
    on_state: Callable[[str], None],
    insecure: bool = False,
) -> None:
    import ollama

    client = ollama.Client(host=host, timeout=None)
    try:
        for update in client.pull(model, insecure=insecure, stream=True):
            if update.digest and update.total:
                progress.set_total(update.digest, update.total)
                progress.set_done(update.digest, update.completed or 0)
            elif update.status:
                on_state(f"ollama pull {model}: {update.status}")
    except ollama.ResponseError as exc:
        reason = Reason.OLLAMA_PULL_FAILED
        if "no space left on device" in exc.error.lower():
            reason = Reason.DISK_FULL
        raise FetchError(reason, f"ollama pull {model}: {exc.error}") from None
    except httpx.HTTPError as exc:
        raise FetchError(
            Reason.OLLAMA_PULL_FAILED, f"ollama pull {model}: {type(exc).__name__}: {exc}"
        ) from None


def pull_version(
    spec: FetchSpec, progress: Progress, on_state: Callable[[str], None]
) -> list[FileRecord]:
    assert spec.ollama_model is not None
    dest = spec.dest
    dest.mkdir(parents=True, exist_ok=True)
    with folder_lock(dest, lock_timeout(spec)):
        current = read_manifest(dest)
        if current is not None and current[0] == spec.version:
            on_state("checking files already present")
            if current[1] and scan_tree(dest) == current[1]:
                log.info("version folder already complete; nothing to pull")
                return current[1]
        remove_durably(dest / MANIFEST_NAME)
        binary = find_ollama(spec.ollama_bin)
        with ollama_server(binary, dest) as host:
            on_state(f"pulling {spec.ollama_model}")
            pull(host, spec.ollama_model, progress, on_state, spec.ollama_insecure)
        on_state("writing the manifest")
        records = scan_tree(dest)
        if not any(r.path.startswith("manifests/") for r in records):
            raise FetchError(
                Reason.OLLAMA_PULL_FAILED,
                f"ollama pull {spec.ollama_model} reported success but wrote no manifest",
            )
        write_manifest(dest, spec.version, records, datetime.now(UTC))
        return records
