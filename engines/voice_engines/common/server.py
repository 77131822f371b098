"""Runs an engine app with uvicorn, logging JSON."""

from __future__ import annotations

from fastapi import FastAPI

from voice_engines.common.json_logging import configure_json_logging
from voice_engines.common.settings import EngineSettings


def serve(app: FastAPI, settings: EngineSettings) -> None:
    import uvicorn

    configure_json_logging(settings.log_level)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # Lets in-flight requests finish when the pod is terminated.
        timeout_graceful_shutdown=30,
    )
