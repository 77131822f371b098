"""A real S3-compatible server on 127.0.0.1: MinIO, built from its Go module by
`scripts/build-testground.sh minio` into the cache (MINIO_BIN overrides). Objects are put
with minio-py, the client the fetcher uses, as a user's upload would."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import urllib3
from minio import Minio
from testground.processes import Process, free_port

ACCESS_KEY = "voice-test-access"
SECRET_KEY = "voice-test-secret-0123456789"
REGION = "us-east-1"


def find_minio() -> str | None:
    cache = os.environ.get("VOICE_OPERATOR_CACHE", os.path.expanduser("~/.cache/voice-operator"))
    built = sorted(glob.glob(f"{cache}/minio-*/minio"))
    for candidate in [os.environ.get("MINIO_BIN"), shutil.which("minio"), *reversed(built)]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    process: Process

    def client(self) -> Minio:
        return Minio(
            self.endpoint.removeprefix("http://"),
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            secure=False,
            region=REGION,
        )

    def put(self, bucket: str, key: str, source: Path) -> None:
        client = self.client()
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        client.fput_object(bucket, key, str(source))

    def stop(self) -> None:
        self.process.stop()

    def start(self) -> None:
        self.process.start()
        wait_ready(self)


def wait_ready(server: S3Server, timeout: float = 60) -> None:
    http = urllib3.PoolManager(retries=False, timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.process.alive():
            raise RuntimeError(f"minio exited:\n{server.process.log_tail()}")
        try:
            if http.request("GET", f"{server.endpoint}/minio/health/ready").status == 200:
                return
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"minio not ready after {timeout:g}s:\n{server.process.log_tail()}")


@contextmanager
def minio_server(binary: str, folder: Path) -> Iterator[S3Server]:
    port, console = free_port(), free_port()
    data = folder / "data"
    data.mkdir(parents=True)
    process = Process(
        "minio",
        [
            binary,
            "server",
            str(data),
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{console}",
            "--quiet",
        ],
        folder / "minio.log",
        env={
            "MINIO_ROOT_USER": ACCESS_KEY,
            "MINIO_ROOT_PASSWORD": SECRET_KEY,
            "MINIO_REGION": REGION,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "HOME": str(folder),
        },
    )
    server = S3Server(f"http://127.0.0.1:{port}", process)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Relay:
    """A TCP relay in front of the server, as a flaky or slow link would be: it can cut
    the first connections after some bytes towards the client, pace them, and it counts
    them and keeps each request's head (method, path, Range)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after: int | None = None
        self.cut_times = 0
        self.rate: float | None = None  # bytes per second towards the client
        self.bytes_down = 0
        self.heads: list[str] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ranges(self) -> list[str | None]:
        """The Range of each GET, in order (None: the whole object)."""
        out = []
        for head in self.heads:
            if head.startswith("GET "):
                m = re.search(r"(?im)^range:\s*(\S+)", head)
                out.append(m.group(1) if m else None)
        return out

    def close(self) -> None:
        self.closing = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                cut = self.cut_after if self.cut_times > 0 else None
                if cut is not None:
                    self.cut_times -= 1
            threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, cut), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while data := client.recv(1 << 16):
                buffer += data
                while b"\r\n\r\n" in buffer:  # requests carry no body here (GET, HEAD)
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    with self.lock:
                        self.heads.append(head.decode("latin-1"))
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _down(self, upstream: socket.socket, client: socket.socket, cut: int | None) -> None:
        sent, began = 0, time.monotonic()
        with contextlib.suppress(OSError):
            while data := upstream.recv(1 << 16):
                if cut is not None and sent + len(data) >= cut:
                    data = data[: cut - sent]
                client.sendall(data)
                sent += len(data)
                with self.lock:
                    self.bytes_down += len(data)
                if cut is not None and sent >= cut:
                    break
                if self.rate:
                    ahead = sent / self.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
