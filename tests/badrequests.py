"""The bad-input catalogue's parts, shared by the engines' and the gateway's tiers: a case
(what is sent, the 4xx it must get), the error shape it is checked against, raw HTTP for
what httpx will not send (slow bodies, broken framing, huge headers), and schemathesis
run against a live OpenAPI schema with a bounded number of examples."""

from __future__ import annotations

import contextlib
import io
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import numpy as np
import soundfile as sf

MiB = 1024 * 1024
# Generous: a slow client is cut off after the server's body timeout (a few seconds in the
# tests); this only bounds how long a test waits for that to happen.
CUT_OFF_WAIT_S = 60


@dataclass(frozen=True)
class Answer:
    """What came back: the status, headers and body, and whether the server then closed
    the connection."""

    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool = False

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Case:
    """One bad request. code None: the HTTP server itself refuses it (h11: malformed or
    oversized framing), with its own plain 400 and a closed connection, before any of our
    code sees a request."""

    name: str
    send: Callable[[str], Answer]  # given the server's base URL
    status: int
    code: str | None
    field: str | None = None
    closes: bool = False


def answer_of(response: httpx.Response) -> Answer:
    return Answer(response.status_code, dict(response.headers), response.content)


def assert_refused(answer: Answer, case: Case) -> None:
    assert answer.status == case.status, (case.name, answer.status, answer.body[:300])
    if case.closes or case.code is None:
        assert answer.closed, f"{case.name}: the connection should be closed"
    if case.code is None:
        return
    assert answer.headers["content-type"].startswith("application/json"), case.name
    body = answer.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "field", "correlation_id"}, error
    assert error["code"] == case.code, (case.name, error)
    assert error["message"], error
    assert error["correlation_id"] == answer.headers["x-request-id"], error
    if case.field is not None:
        assert error["field"] == case.field, (case.name, error)


# --- how a case sends ---


def post(path: str, **kwargs: Any) -> Callable[[str], Answer]:
    def send(url: str) -> Answer:
        return answer_of(httpx.post(f"{url}{path}", timeout=120, **kwargs))

    return send


def call(method: str, path: str, **kwargs: Any) -> Callable[[str], Answer]:
    def send(url: str) -> Answer:
        return answer_of(httpx.request(method, f"{url}{path}", timeout=120, **kwargs))

    return send


def raw(data: bytes | Callable[[str], bytes]) -> Callable[[str], Answer]:
    """Bytes written to the socket as they are (the Host header filled in from the URL
    where data is a function of it), then the answer read until the server closes."""

    def send(url: str) -> Answer:
        host = urlsplit(url).netloc
        return raw_exchange(url, data(host) if callable(data) else data)

    return send


def raw_exchange(url: str, data: bytes) -> Answer:
    parts = urlsplit(url)
    conn = h11.Connection(h11.CLIENT)
    status, headers, body = 0, {}, b""
    with socket.create_connection((parts.hostname, parts.port), timeout=CUT_OFF_WAIT_S) as sock:
        # The server may answer and close before reading everything (a refused header
        # section, say): its answer is then already here to be read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        while True:
            chunk = _recv(sock)
            conn.receive_data(chunk)
            event = _next_events(conn)
            for item in event:
                if isinstance(item, h11.Response):
                    status = item.status_code
                    headers = {k.decode().lower(): v.decode() for k, v in item.headers}
                elif isinstance(item, h11.Data):
                    body += item.data
                elif isinstance(item, h11.EndOfMessage):
                    return Answer(status, headers, body, closed=_closes(sock))
            if not chunk:
                return Answer(status, headers, body, closed=True)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def _next_events(conn: h11.Connection) -> list[Any]:
    events = []
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return events
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return events
        events.append(event)
        if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return events


def _closes(sock: socket.socket) -> bool:
    """True if the server closes the connection right after its answer (an idle
    keep-alive connection would stay open for uvicorn's 5 s)."""
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def http_head(host: str, path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def slow_body(path: str, content_type: str, start: bytes = b"") -> Callable[[str], Answer]:
    """Announces 1,000 bytes more than it sends (slowloris): a well-formed start of the
    body, then nothing. The server must cut it off."""
    return raw(
        lambda host: (
            http_head(
                host,
                path,
                {"Content-Type": content_type, "Content-Length": str(len(start) + 1000)},
            )
            + start
        )
    )


def chunked_over(
    path: str, content_type: str, prefix: bytes, limit: int
) -> Callable[[str], Answer]:
    """A chunked body (no Content-Length to refuse it by) that grows past limit and is
    never finished: the server must stop reading at the limit and say 413."""

    def data(host: str) -> bytes:
        head = http_head(host, path, {"Content-Type": content_type, "Transfer-Encoding": "chunked"})
        piece = b"\0" * MiB
        chunks = [b"%x\r\n%s\r\n" % (len(prefix), prefix)]
        chunks += [b"%x\r\n%s\r\n" % (len(piece), piece)] * (limit // MiB + 2)
        return head + b"".join(chunks)

    return raw(data)


def protocol_cases(
    path: str, content_type: str, valid_body: bytes, body_start: bytes
) -> list[Case]:
    """Framing the HTTP server refuses, and slow or oversized requests our guard refuses,
    the same for every engine and the gateway. body_start: a well-formed first part of a
    body, for the slow client."""

    def framed(headers: dict[str, str], body: bytes) -> Callable[[str], Answer]:
        return raw(lambda host: http_head(host, path, headers) + body)

    ct = {"Content-Type": content_type}
    return [
        Case(
            "slow body (1,000 bytes announced and never sent)",
            slow_body(path, content_type, body_start),
            408,
            "request_timeout",
            closes=True,
        ),
        Case(
            "Content-Length over the body limit",
            framed({**ct, "Content-Length": str(64 * 1024 * MiB)}, b""),
            413,
            "payload_too_large",
            closes=True,
        ),
        Case(
            "headers of 20 KiB",
            framed(
                {**ct, "X-Padding": "a" * 20_000, "Content-Length": str(len(valid_body))},
                valid_body,
            ),
            431,
            "headers_too_large",
        ),
        Case(
            # More than one read of the socket: h11 refuses it while it arrives.
            "headers of 1 MiB",
            framed(
                {**ct, "X-Padding": "a" * MiB, "Content-Length": str(len(valid_body))},
                valid_body,
            ),
            400,
            None,
        ),
        Case(
            "Content-Length not a number",
            framed({**ct, "Content-Length": "12abc"}, valid_body),
            400,
            None,
        ),
        Case(
            "chunk size not hex",
            framed({**ct, "Transfer-Encoding": "chunked"}, b"zz\r\nhello\r\n0\r\n\r\n"),
            400,
            None,
        ),
        Case(
            "request line garbage", raw(b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n"), 400, None
        ),
    ]


# --- audio ---


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def with_rate(wav: bytes, rate: int) -> bytes:
    """The same WAV with its header claiming another sample rate (and byte rate)."""
    data = bytearray(wav)
    fmt = data.index(b"fmt ") + 8
    channels = int.from_bytes(data[fmt + 2 : fmt + 4], "little")
    bits = int.from_bytes(data[fmt + 14 : fmt + 16], "little")
    data[fmt + 4 : fmt + 8] = rate.to_bytes(4, "little")
    data[fmt + 8 : fmt + 12] = (rate * channels * bits // 8 % 2**32).to_bytes(4, "little")
    return bytes(data)


def float_wav(values: np.ndarray, rate: int = 16000) -> bytes:
    """A 32-bit float WAV holding exactly these values (NaN and inf included), which
    libsndfile's writer would not keep."""
    pcm = values.astype("<f4").tobytes()
    header = b"".join(
        [
            b"RIFF",
            (36 + len(pcm)).to_bytes(4, "little"),
            b"WAVEfmt ",
            (16).to_bytes(4, "little"),
            (3).to_bytes(2, "little"),  # IEEE float
            (1).to_bytes(2, "little"),
            rate.to_bytes(4, "little"),
            (rate * 4).to_bytes(4, "little"),
            (4).to_bytes(2, "little"),
            (32).to_bytes(2, "little"),
            b"data",
            len(pcm).to_bytes(4, "little"),
        ]
    )
    return header + pcm


# --- schemathesis ---


@dataclass
class FuzzReport:
    examples: int = 0
    server_errors: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


def fuzz_openapi(url: str, examples_per_operation: int) -> FuzzReport:
    """schemathesis against the live schema at url/openapi.json: for every operation,
    examples that fit the schema and examples that do not; every answer must be below 500."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples_per_operation,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def one(case: Any) -> None:
                response = case.call(base_url=url, timeout=120)
                report.examples += 1
                status = response.status_code
                report.statuses[status] = report.statuses.get(status, 0) + 1
                if status >= 500:
                    report.server_errors.append(
                        f"{case.method} {case.path} {status}: {response.text[:200]}"
                    )

            # Unsatisfiable: nothing to vary (no parameters, or no way to break them).
            with contextlib.suppress(Unsatisfiable):
                one()
    return report
