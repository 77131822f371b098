"""Start and stop the control plane's processes: exactly the ones we started, no others."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            # Its own process group, so a Ctrl-C in the terminal reaches pytest only and
            # pytest stops the plane in order.
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


class StartupError(RuntimeError):
    pass


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's own error."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(result.returncode, result.args, result.stdout, result.stderr)

    def __str__(self) -> str:
        return f"kubectl {' '.join(map(str, self.cmd[2:]))} failed: {self.stderr.strip()}"


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, processes: list[Process], poll=0.2
) -> None:
    """Wait for `check` to pass; fail fast (with the log) when a process we need has died."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for p in processes:
            if not p.alive():
                raise StartupError(f"{p.name} exited while waiting for {what}:\n{p.log_tail()}")
        try:
            if check():
                return
        except Exception as e:  # the check talks to a server that may not be up yet
            last_error = e
        time.sleep(poll)
    tails = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in processes)
    raise StartupError(
        f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})\n{tails}"
    )
