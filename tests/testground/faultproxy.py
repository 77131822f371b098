"""A reverse proxy between one client (the operator) and the apiserver that misbehaves on
command: it cuts every open connection (watch streams included), or answers every write
with 409 Conflict for a while. It forwards requests as they are, Authorization header
included, so the client keeps its own identity (a ServiceAccount token).

The client talks plain HTTP to 127.0.0.1; the proxy talks TLS to the apiserver, checking
its certificate against the cluster's CA. Streams are relayed chunk by chunk, so a watch
through the proxy is a watch.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Hop-by-hop headers and the ones the relay recomputes.
_REQUEST_DROP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
_RESPONSE_DROP = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def conflict_status(method: str, path: str) -> dict:
    """What the apiserver answers when a write lost a race (optimistic concurrency)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"Operation cannot be fulfilled on {path}: the object has been modified; "
        "please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"causes": [{"message": f"injected by the test ground's proxy ({method})"}]},
        "code": 409,
    }


class FaultProxy:
    """Start with `start()`; point a kubeconfig at it with `kubeconfig_for()`."""

    def __init__(self, admin_kubeconfig: Path) -> None:
        config = yaml.safe_load(admin_kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.upstream: str = cluster["server"].rstrip("/")
        self.ssl = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
            self.ssl.load_verify_locations(cadata=ca)
        elif "certificate-authority" in cluster:
            self.ssl.load_verify_locations(cafile=cluster["certificate-authority"])
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="proxy")
        # Each relayed request's connection, and the task relaying it.
        self.open: dict[asyncio.BaseTransport, asyncio.Task] = {}
        self.conflicts_until = 0.0
        self.refused: list[tuple[str, str]] = []  # (method, path) answered 409
        self.cuts = 0  # connections closed by cut()
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, connect=10)
        )
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if not self.thread.is_alive():
            return

        async def _stop() -> None:
            self._cut()
            if self._runner:
                await self._runner.cleanup()
            if self._session:
                await self._session.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def kubeconfig_for(self, kubeconfig: Path, path: Path | None = None) -> Path:
        """A copy of `kubeconfig` (a token one) whose server is this proxy."""
        config = yaml.safe_load(kubeconfig.read_text())
        for entry in config["clusters"]:
            entry["cluster"] = {"server": self.url}
        if path is None:
            path = Path(tempfile.mkstemp(prefix="proxied-", suffix=".kubeconfig")[1])
        path.write_text(yaml.safe_dump(config))
        return path

    def cut(self) -> int:
        """Close every connection open through the proxy now; returns how many."""
        return asyncio.run_coroutine_threadsafe(self._acut(), self.loop).result(10)

    async def _acut(self) -> int:
        return self._cut()

    def _cut(self) -> int:
        relays = list(self.open.items())
        for transport, task in relays:
            transport.close()
            task.cancel()  # it may be waiting on the apiserver, not on the client
        self.cuts += len(relays)
        return len(relays)

    def refuse_writes(self, seconds: float) -> None:
        """Answer every write with 409 Conflict for the next `seconds`."""
        self.conflicts_until = time.monotonic() + seconds

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if request.method in WRITES and time.monotonic() < self.conflicts_until:
            self.refused.append((request.method, request.path))
            return web.json_response(conflict_status(request.method, request.path), status=409)
        transport = request.transport
        task = asyncio.current_task()
        assert transport is not None and task is not None and self._session is not None
        self.open[transport] = task
        response: web.StreamResponse | None = None
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _REQUEST_DROP}
            body = await request.read()
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body or None,
                ssl=self.ssl,
                allow_redirects=False,
            ) as upstream:
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        k: v for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROP
                    },
                )
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            # The client went away, we cut it, or the apiserver did: relay no more.
            transport.close()
            return response if response is not None else web.Response(status=502)
        finally:
            self.open.pop(transport, None)
