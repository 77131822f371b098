"""The routes file the operator writes (a ConfigMap mounted as a directory), parsed with
the models both sides share (voice_contracts.routes), and reloaded when its content changes.

A turn takes the current Routes object once, at its start, and uses it to the end, so a
reload (one attribute assignment) never moves a turn that is already running. A file
that fails to parse or validate never replaces the routes in use."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from voice_contracts.routes import (
    STAGES,
    LlmRouteSettings,
    Routes,
    RoutesError,
    Stage,
    StageRoute,
    SttRouteSettings,
    TtsRouteSettings,
    parse_routes,
)

__all__ = [
    "STAGES",
    "LlmRouteSettings",
    "Routes",
    "RoutesError",
    "RoutesWatcher",
    "Stage",
    "StageRoute",
    "SttRouteSettings",
    "TtsRouteSettings",
    "llm_settings",
    "parse_routes",
    "stt_settings",
    "tts_settings",
]

log = logging.getLogger(__name__)


def stt_settings(route: StageRoute) -> SttRouteSettings:
    assert isinstance(route.settings, SttRouteSettings), "not an stt route"
    return route.settings


def llm_settings(route: StageRoute) -> LlmRouteSettings:
    assert isinstance(route.settings, LlmRouteSettings), "not an llm route"
    return route.settings


def tts_settings(route: StageRoute) -> TtsRouteSettings:
    assert isinstance(route.settings, TtsRouteSettings), "not a tts route"
    return route.settings


class RoutesWatcher:
    """Holds the current routes and polls the file for new content. Content, not mtime,
    decides: kubelet's symlink swap changes both, but a touch alone changes nothing."""

    def __init__(
        self,
        path: Path,
        poll_seconds: float,
        on_reload: Callable[[str, Routes | None], None] = lambda *_: None,
    ) -> None:
        self.path = Path(path)
        self.poll_seconds = poll_seconds
        self.on_reload = on_reload
        self.current: Routes | None = None
        self.generation = 0
        self.error: str | None = None
        self._digest: str | None = None

    def check(self) -> bool:
        """Reads the file once; True if new routes were applied."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if self.error is None or self._digest is not None:
                log.warning("routes file %s does not exist (yet)", self.path)
            self.error, self._digest = f"{self.path} does not exist", None
            return False
        except OSError as exc:
            self.error = f"{self.path}: {exc}"
            log.error("cannot read routes file: %s", self.error)
            return False
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            routes = parse_routes(data)
        except RoutesError as exc:
            self.error = str(exc)
            log.error("routes file %s is invalid; keeping the routes in use: %s", self.path, exc)
            self.on_reload("rejected", None)
            return False
        self.current, self.error = routes, None
        self.generation += 1
        log.info(
            "routes applied",
            extra={"generation": self.generation, "routes": routes.summary()},
        )
        self.on_reload("applied", routes)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                # The watcher must outlive any surprise: the routes in use stay valid.
                log.exception("checking the routes file failed")
