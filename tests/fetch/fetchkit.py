"""Running `voice-fetch` as the Job runs it, and reading what it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VOICE_FETCH = Path(sys.executable).with_name("voice-fetch")
# Fast failure paths: a stall is one quiet second, backoff a fraction of one.
TEST_TUNABLES = {
    "FETCH_STALL_TIMEOUT": "1",
    "FETCH_BACKOFF_MAX": "0.2",
    "FETCH_MAX_ATTEMPTS": "4",
    "FETCH_REPORT": "log",
}


@dataclass(frozen=True)
class ModelFile:
    name: str
    path: Path
    sha256: str
    size: int


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def statuses(self) -> list[dict[str, Any]]:
        """The reported download entries, in order (log mode's JSON lines)."""
        out = []
        for line in self.stdout.splitlines():
            doc = json.loads(line)
            assert doc["kind"] == "status"
            (entry,) = doc["status"]["downloads"].values()
            out.append(entry)
        return out

    @property
    def final(self) -> dict[str, Any]:
        return self.statuses[-1]


def fetch_env(
    dest: Path, files: list[dict[str, str]] | None = None, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FETCH_", "KUBERNETES_"))}
    env.update(TEST_TUNABLES)
    env.update(FETCH_ASSET="joe", FETCH_NAMESPACE="voice", FETCH_VERSION=dest.name)
    env["FETCH_DEST"] = str(dest)
    if files is not None:
        env["FETCH_FILES"] = json.dumps(files)
    env.update(extra)
    return env


def run_fetch(env: dict[str, str], timeout: float = 60) -> Run:
    proc = subprocess.run(
        [str(VOICE_FETCH)], env=env, capture_output=True, text=True, timeout=timeout
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def entry(m: ModelFile, url: str, path: str | None = None) -> dict[str, str]:
    return {"url": url, "sha256": m.sha256, "path": path or m.name}
