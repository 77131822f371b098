"""The routes file the operator writes (a ConfigMap mounted as a directory): parsed and
validated into immutable models, and reloaded when its content changes.

A turn takes the current Routes object once, at its start, and uses it to the end, so a
reload (one attribute assignment) never moves a turn that is already running. A file
that fails to parse or validate never replaces the routes in use."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)

Stage = Literal["stt", "llm", "tts"]
STAGES: tuple[Stage, ...] = ("stt", "llm", "tts")
VENDORS: dict[str, frozenset[str]] = {
    "stt": frozenset({"deepgram", "openai"}),
    "llm": frozenset({"openai", "groq"}),
    "tts": frozenset({"elevenlabs", "openai"}),
}


class _Wire(BaseModel):
    # The operator may add fields before the gateway knows them: ignore, don't fail.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class SttSettings(_Wire):
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    language: str | None = None


class LlmSettings(_Wire):
    max_tokens: int | None = Field(None, alias="maxTokens", ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    system_prompt: str | None = Field(None, alias="systemPrompt")


class TtsSettings(_Wire):
    speed: float | None = Field(None, ge=0.25, le=4.0)


class StageRoute(_Wire):
    """Where one stage goes. provider internal: our engine at url; external: vendor's API
    at url (null: the vendor's own base URL) with the key from apiKeyFile or apiKeyEnv."""

    provider: Literal["internal", "external"]
    url: str | None = Field(None, pattern=r"^https?://\S+$")
    revision: str = ""
    model: str | None = None
    model_version: str | None = Field(None, alias="modelVersion")
    vendor: str | None = None
    voice: str | None = None
    api_key_file: str | None = Field(None, alias="apiKeyFile")
    # Optional extension: the key in an environment variable (e.g. from envFrom a Secret).
    api_key_env: str | None = Field(None, alias="apiKeyEnv")
    settings: dict[str, Any] = Field(default_factory=dict)
    # Optional extension: tried when this route fails (same shape, no fallback of its own).
    fallback: StageRoute | None = None

    @model_validator(mode="after")
    def _complete(self) -> StageRoute:
        if self.provider == "internal" and not self.url:
            raise ValueError("an internal route needs url")
        if self.provider == "external" and not self.vendor:
            raise ValueError("an external route needs vendor")
        if self.fallback is not None and self.fallback.fallback is not None:
            raise ValueError("a fallback route cannot have a fallback of its own")
        return self

    @property
    def name(self) -> str:
        """The provider label of metrics and answers: internal, or the vendor."""
        return "internal" if self.provider == "internal" else str(self.vendor)

    def candidates(self) -> list[StageRoute]:
        return [self] if self.fallback is None else [self, self.fallback]


class Routes(_Wire):
    agent: str = ""
    namespace: str = ""
    stages: dict[Stage, StageRoute | None] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _vendors_fit_stages(self) -> Routes:
        for stage, route in self.stages.items():
            for candidate in route.candidates() if route else []:
                if candidate.provider == "external" and candidate.vendor not in VENDORS[stage]:
                    raise ValueError(
                        f"stages.{stage}: vendor {candidate.vendor!r} is not one of "
                        f"{sorted(VENDORS[stage])}"
                    )
                settings_model = {"stt": SttSettings, "llm": LlmSettings, "tts": TtsSettings}
                settings_model[stage].model_validate(candidate.settings)
        return self

    def route(self, stage: Stage) -> StageRoute | None:
        return self.stages.get(stage)

    def summary(self) -> dict[str, Any]:
        """What the routes are, without key locations: for /v1/routes and logs."""

        def one(route: StageRoute | None) -> dict[str, Any] | None:
            if route is None:
                return None
            return {
                "provider": route.name,
                "url": route.url,
                "model": route.model,
                "revision": route.revision,
                "fallback": one(route.fallback),
            }

        return {
            "agent": self.agent,
            "namespace": self.namespace,
            "stages": {stage: one(self.route(stage)) for stage in STAGES},
        }


def stt_settings(route: StageRoute) -> SttSettings:
    return SttSettings.model_validate(route.settings)


def llm_settings(route: StageRoute) -> LlmSettings:
    return LlmSettings.model_validate(route.settings)


def tts_settings(route: StageRoute) -> TtsSettings:
    return TtsSettings.model_validate(route.settings)


class RoutesError(ValueError):
    pass


def parse_routes(text: str | bytes) -> Routes:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise RoutesError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RoutesError("not a JSON object")
    try:
        return Routes.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'routes'}: {e['msg']}" for e in exc.errors()
        )
        raise RoutesError(problems) from None


class RoutesWatcher:
    """Holds the current routes and polls the file for new content. Content, not mtime,
    decides: kubelet's symlink swap changes both, but a touch alone changes nothing."""

    def __init__(
        self,
        path: Path,
        poll_seconds: float,
        on_reload: Callable[[str, Routes | None], None] = lambda result, routes: None,
    ) -> None:
        self.path = path
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
