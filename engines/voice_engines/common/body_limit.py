"""Guards the reading of requests: headers over 16 KiB are refused with 431, a body over
the size limit with 413 before it is buffered (by Content-Length when the client sends
one, by counting bytes when it streams a chunked body), and a body that has not fully
arrived within the body timeout with 408, so a client that announces 1,000 bytes and
sends 10 (slowloris) cannot hold a request open.

It only times and counts the ASGI receive() calls the app makes; the HTTP itself is parsed
by the server (uvicorn with h11, whose header limits common.server sets).

FastAPI turns any exception raised while it reads a body into its own 400; so the guard
remembers why it stopped the body and puts its own answer in place of whatever the app
then sends."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voice_engines.common.errors import error_bytes

# A request's headers together. h11 (common.server) refuses incomplete headers beyond this
# with its own 400; headers that arrive complete in one read are measured here.
MAX_HEADER_BYTES = 16 * 1024


class BodyRefusedError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class BodySizeLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float | None = None,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_header_bytes = max_header_bytes

    def too_large(self) -> BodyRefusedError:
        return BodyRefusedError(
            413, "payload_too_large", f"request body is larger than {self.max_bytes} bytes"
        )

    def too_slow(self) -> BodyRefusedError:
        return BodyRefusedError(
            408,
            "request_timeout",
            f"the request body did not arrive within {self.timeout_s:g} s",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.max_header_bytes:
            # h11 stops headers that arrive slowly at this size; these arrived at once.
            await _refuse(
                send,
                BodyRefusedError(
                    431,
                    "headers_too_large",
                    f"the request's headers are {size} bytes; the limit is {self.max_header_bytes}",
                ),
            )
            return
        length = dict(headers).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _refuse(send, self.too_large())
            return
        guarded = _GuardedRequest(self, receive, send)
        try:
            await self.app(scope, guarded.receive, guarded.send)
        except BodyRefusedError as exc:
            if not guarded.response_started:
                await _refuse(send, exc)


class _GuardedRequest:
    """One request's receive() and send() as the guard sees them."""

    def __init__(self, guard: BodySizeLimitMiddleware, receive: Receive, send: Send) -> None:
        self.guard = guard
        self._receive = receive
        self._send = send
        self.deadline = None if guard.timeout_s is None else time.monotonic() + guard.timeout_s
        self.seen = 0
        self.body_done = False
        self.refused: BodyRefusedError | None = None
        self.response_started = False

    async def receive(self) -> Message:
        if self.refused is not None:
            raise self.refused
        if self.body_done or self.deadline is None:
            # After the body, receive() only waits for the client to disconnect (streamed
            # responses listen for it): no deadline there.
            message = await self._receive()
        else:
            try:
                message = await asyncio.wait_for(self._receive(), self.deadline - time.monotonic())
            except TimeoutError:
                self.refused = self.guard.too_slow()
                raise self.refused from None
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            self.body_done = not message.get("more_body", False)
            if self.seen > self.guard.max_bytes:
                self.refused = self.guard.too_large()
                raise self.refused
        return message

    async def send(self, message: Message) -> None:
        started = message["type"] == "http.response.start"
        if self.refused is not None:
            # The app answers the exception it got from receive() (FastAPI: a 400); the
            # client gets the real reason instead.
            if started and not self.response_started:
                self.response_started = True
                await _refuse(self._send, self.refused)
            return
        self.response_started = self.response_started or started
        await self._send(message)


async def _refuse(send: Send, error: BodyRefusedError) -> None:
    body = error_bytes(error.code, error.message)
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is never read: the connection cannot carry another
                # request.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
