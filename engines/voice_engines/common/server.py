"""Runs an engine app with uvicorn, logging JSON."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from voice_engines.common.body_limit import MAX_HEADER_BYTES
from voice_engines.common.json_logging import configure_json_logging
from voice_engines.common.settings import EngineSettings


def uvicorn_options() -> dict[str, Any]:
    """What every server of the project (engines and gateway) runs uvicorn with."""
    return {
        "log_config": None,
        "access_log": False,
        # h11, not httptools: h11 bounds the request line and headers while they arrive
        # (answering 400 and closing the connection beyond the limit).
        "http": "h11",
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        # An idle keep-alive connection is closed after this many seconds.
        "timeout_keep_alive": 5,
        # Lets in-flight requests finish when the pod is terminated.
        "timeout_graceful_shutdown": 30,
    }


def serve(app: FastAPI, settings: EngineSettings) -> None:
    import uvicorn

    configure_json_logging(settings.log_level)
    uvicorn.run(app, host=settings.host, port=settings.port, **uvicorn_options())
