"""`voice-operator`: run the operator (kopf) with production settings."""

from __future__ import annotations

import argparse
import logging

import kopf
import prometheus_client

import voice_operator.controllers.handlers  # noqa: F401  (registers the handlers)


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
        "--metrics-port",
        type=int,
        default=8080,
        help="port of the operator's Prometheus metrics (0: none)",
    )
    parser.add_argument("--log-format", choices=["json", "plain"], default="json")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
    )


if __name__ == "__main__":
    main()
