"""`voice-operator`: run the operator (kopf) with production settings."""

from __future__ import annotations

import argparse
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import kopf
import prometheus_client
from prometheus_client.exposition import ThreadingWSGIServer

import voice_operator.controllers.handlers  # noqa: F401  (registers the handlers)
from voice_operator.logs import configure_logging
from voice_operator.peering import PeeringConfig

READINESS_PATH = "/readyz"


def metrics_app(ready: threading.Event) -> WSGIApplication:
    """prometheus_client's metrics app, plus `/readyz`: 200 once `ready` is set, else 503."""
    metrics = prometheus_client.make_wsgi_app()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != READINESS_PATH:
            return metrics(environ, start_response)
        ok = ready.is_set()
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "text/plain; charset=utf-8")],
        )
        return [b"ready\n" if ok else b"not ready\n"]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes are not worth a log line each."""


def serve_metrics(port: int, ready: threading.Event, addr: str = "0.0.0.0") -> WSGIServer:
    """What prometheus_client.start_http_server does, with `/readyz` beside the metrics."""
    server = make_server(
        addr, port, metrics_app(ready), ThreadingWSGIServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def seniority_priority(started: float | None = None) -> int:
    """A kopf peering priority by start time: the replica that started first works, the
    later ones stand by. kopf pauses every operator that sees a live peer of equal priority
    (it has no leader election), so identical replicas must not share one; the older ones
    rank higher, so a replica that starts (a rolling update, a reschedule) never preempts
    the one at work. Negative, below `kopf run --dev` (666) and `kopf freeze` (100). The
    random part breaks a tie between replicas started in the same millisecond."""
    started_ms = int((time.time() if started is None else started) * 1000)
    return -(started_ms * 1000 + random.randrange(1000))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The voice-agent operator.")
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all",
    )
    parser.add_argument(
        "--liveness", default="http://0.0.0.0:8081/healthz", help="kopf's liveness endpoint"
    )
    parser.add_argument(
        "--peering",
        default=None,
        help="kopf peering name for several replicas (default: standalone)",
    )
    parser.add_argument(
        "--peering-priority",
        type=int,
        default=None,
        help="this replica's kopf peering priority; the highest live one works "
        "(default: by start time, the oldest replica first)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        help=f"port of the operator's Prometheus metrics and of {READINESS_PATH} (0: none)",
    )
    parser.add_argument("--log-format", choices=["json", "plain"], default="json")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(json_lines=args.log_format == "json", verbose=args.verbose)
    # kopf raises it once the startup handlers are done and it releases its watchers and
    # workers; a cleanup handler lowers it again when the operator begins to stop.
    ready = threading.Event()

    @kopf.on.cleanup(id="readiness")
    def not_ready(**_: Any) -> None:
        ready.clear()

    if args.metrics_port:
        serve_metrics(args.metrics_port, ready)
    priority = seniority_priority() if args.peering_priority is None else args.peering_priority
    # Our own identity, given to kopf too, so the work queue's gate knows its entry.
    identity = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
    memo = kopf.Memo()
    if args.peering is not None:
        memo["peering"] = PeeringConfig(
            args.peering, identity, priority, namespaces=tuple(args.namespace)
        )
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=priority,
        identity=cast(Any, identity),
        liveness_endpoint=args.liveness,
        ready_flag=ready,
        memo=memo,
    )


if __name__ == "__main__":
    main()
