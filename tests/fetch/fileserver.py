"""A real HTTP file server on 127.0.0.1 that supports Range and misbehaves on command.

It counts requests and body bytes per file, so tests can assert that a resumed download
was not sent the bytes it already had, and that a complete version costs no request.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_BLOCK = 64 * 1024
_SLICE = 1 << 20


@dataclass
class Behaviour:
    """How the server treats one file. Counters (`*_times`) are spent one per request."""

    status: int | None = None  # answer every request with this status and no body
    fail_times: int = 0  # the first N requests get `fail_status`
    fail_status: int = 503
    cut_after: int | None = None  # close the connection after N body bytes...
    cut_times: int = 0  # ...for this many requests
    stall_after: int | None = None  # send N body bytes, go silent for `stall_for`, close...
    stall_for: float = 0.0
    stall_times: int = 0  # ...for this many requests
    corrupt: bool = False  # flip one byte of the body
    no_range: bool = False  # ignore Range: always 200 with the whole file
    no_length: bool = False  # no Content-Length: the body ends when the connection does
    rate: float | None = None  # bytes per second
    require: tuple[str, str] | None = None  # 401 unless this header has this value
    redirect: str | None = None  # 302 to this url


@dataclass
class Served:
    path: Path
    size: int
    etag: str
    behaviour: Behaviour
    requests: list[dict[str, Any]] = field(default_factory=list)
    bytes_sent: int = 0


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, name: str, path: Path, **behaviour: Any) -> str:
        stat = path.stat()
        tag = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        self.files[name] = Served(path, stat.st_size, f'"{tag[:20]}"', Behaviour(**behaviour))
        return f"{self.base}/{name}"

    def served(self, name: str) -> Served:
        return self.files[name]

    @property
    def total_requests(self) -> int:
        return sum(len(s.requests) for s in self.files.values())

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"file_server": server})


@dataclass
class _Spent:
    """What one request took from its file's counters."""

    failing: bool
    cutting: bool
    stalling: bool


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    file_server: FileServer  # whose files this handler serves

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        served = self.file_server.files.get(self.path.lstrip("/").split("?")[0])
        if served is None:
            self._empty(404)
            return
        spent = self._spend(served)
        if self._refused(served.behaviour, spent):
            return
        span = self._range(served)
        if span is None:
            return
        start, end, partial = span
        length = end - start + 1
        self._send_headers(served, start, end, partial, length)
        self._send_body(served, spent, start, length)

    def _spend(self, served: Served) -> _Spent:
        b = served.behaviour
        with self.file_server.lock:
            served.requests.append(
                {"range": self.headers.get("Range"), "headers": dict(self.headers)}
            )
            failing = b.fail_times > 0
            if failing:
                b.fail_times -= 1
            cutting = b.cut_after is not None and b.cut_times > 0
            if cutting:
                b.cut_times -= 1
            stalling = b.stall_after is not None and b.stall_times > 0
            if stalling:
                b.stall_times -= 1
        return _Spent(failing, cutting, stalling)

    def _refused(self, b: Behaviour, spent: _Spent) -> bool:
        """Answers instead of the file when the behaviour says so."""
        if b.redirect:
            self.send_response(302)
            self.send_header("Location", b.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        if b.require and self.headers.get(b.require[0]) != b.require[1]:
            self._empty(401)
            return True
        if b.status:
            self._empty(b.status)
            return True
        if spent.failing:
            self._empty(b.fail_status)
            return True
        return False

    def _range(self, served: Served) -> tuple[int, int, bool] | None:
        """(start, end, partial) of the bytes to send; None when 416 has been answered."""
        start, end = 0, served.size - 1
        m = _RANGE.fullmatch(self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if not m or served.behaviour.no_range or (if_range is not None and if_range != served.etag):
            return start, end, False
        start = int(m.group(1))
        if m.group(2):
            end = min(int(m.group(2)), served.size - 1)
        if start >= served.size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{served.size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return start, end, True

    def _send_headers(
        self, served: Served, start: int, end: int, partial: bool, length: int
    ) -> None:
        b = served.behaviour
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "none" if b.no_range else "bytes")
        self.send_header("ETag", served.etag)
        self.send_header("Last-Modified", formatdate(served.path.stat().st_mtime, usegmt=True))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{served.size}")
        if b.no_length:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_body(self, served: Served, spent: _Spent, start: int, length: int) -> None:
        b = served.behaviour
        limit = length
        if spent.cutting:
            limit = min(limit, b.cut_after or 0)
        if spent.stalling:
            limit = min(limit, b.stall_after or 0)
        plain = not (b.corrupt or b.rate)
        try:
            with served.path.open("rb") as f:
                if plain:
                    sent = self._sendfile(served, f, start, limit)
                else:
                    sent = self._send_slowly(served, f, start, limit)
        except OSError:
            self.close_connection = True
            return
        if spent.stalling and sent == limit:
            time.sleep(b.stall_for)
        if spent.cutting or spent.stalling:
            self._hang_up()

    def _sendfile(self, served: Served, f: Any, start: int, count: int) -> int:
        # os.sendfile in slices, counted as they go: a client that hangs up halfway
        # has still been sent what the slices before carried.
        sent = 0
        out, src = self.connection.fileno(), f.fileno()
        while sent < count:
            n = os.sendfile(out, src, start + sent, min(count - sent, _SLICE))
            if not n:
                break
            sent += n
            with self.file_server.lock:
                served.bytes_sent += n
        return sent

    def _send_slowly(self, served: Served, f: Any, start: int, count: int) -> int:
        b = served.behaviour
        f.seek(start)
        sent = 0
        began = time.monotonic()
        flip_at = served.size // 2
        while sent < count:
            block = bytearray(f.read(min(_BLOCK, count - sent)))
            if not block:
                break
            pos = start + sent
            if b.corrupt and pos <= flip_at < pos + len(block):
                block[flip_at - pos] ^= 0xFF
            self.wfile.write(block)
            sent += len(block)
            with self.file_server.lock:
                served.bytes_sent += len(block)
            if b.rate:
                ahead = sent / b.rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
        return sent

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
