"""The gateway's Prometheus metrics. Every series carries the agent; stage series carry
the provider (internal or the vendor) and the route's revision, so a rollout shows in
the graphs as one revision's series giving way to the next."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from voice_engines.common.metrics import LATENCY_BUCKETS
from voice_engines.gateway.routes import STAGES, Routes, StageRoute

FIRST_AUDIO_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_STAGE = ["agent", "stage", "provider", "revision"]
_USAGE = ["agent", "provider", "revision"]


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, agent: str) -> None:
        self.agent = agent
        self.stage_duration = Histogram(
            "gateway_stage_duration_seconds",
            "One stage call, from request to its last byte (a TTS call is one sentence "
            "when streaming)",
            _STAGE,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage_errors = Counter(
            "gateway_stage_errors_total",
            "Failed stage calls, by error code",
            [*_STAGE, "code"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "gateway_fallbacks_total",
            "Stage calls answered by the fallback provider after the primary failed",
            ["agent", "stage", "provider", "fallback"],
            registry=registry,
        )
        self.breaker_open = Gauge(
            "gateway_breaker_open",
            "1 while a provider's circuit is open (calls fail fast)",
            ["agent", "stage", "provider", "revision"],
            registry=registry,
        )
        self.first_audio = Histogram(
            "gateway_time_to_first_audio_seconds",
            "From the end of the user's utterance to the first reply audio leaving the gateway",
            ["agent", "mode"],
            buckets=FIRST_AUDIO_BUCKETS,
            registry=registry,
        )
        self.turn_duration = Histogram(
            "gateway_turn_duration_seconds",
            "A whole turn, from the end of the utterance to the last reply audio",
            ["agent", "mode"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.turns = Counter(
            "gateway_turns_total",
            "Turns, by how they ended (ok, or the error code)",
            ["agent", "mode", "outcome"],
            registry=registry,
        )
        self.interruptions = Counter(
            "gateway_interruptions_total",
            "Replies the user interrupted (barge-in by speech, or the client's interrupt)",
            ["agent", "by"],
            registry=registry,
        )
        self.stt_audio_seconds = Counter(
            "gateway_stt_audio_seconds_total",
            "Seconds of audio sent to speech to text",
            _USAGE,
            registry=registry,
        )
        self.llm_tokens = Counter(
            "gateway_llm_tokens_total",
            "Language model tokens, by direction (input: prompt, output: completion)",
            [*_USAGE, "direction"],
            registry=registry,
        )
        self.tts_characters = Counter(
            "gateway_tts_characters_total",
            "Characters sent to text to speech",
            _USAGE,
            registry=registry,
        )
        self.route_reloads = Counter(
            "gateway_routes_reloads_total",
            "Routes file changes seen, by result (applied, rejected)",
            ["agent", "result"],
            registry=registry,
        )
        self.route_info = Gauge(
            "gateway_route_info",
            "1 for each stage's current route",
            _STAGE,
            registry=registry,
        )

    def stage_labels(self, stage: str, route: StageRoute) -> tuple[str, str, str, str]:
        return (self.agent, stage, route.name, route.revision)

    def usage_labels(self, route: StageRoute) -> tuple[str, str, str]:
        return (self.agent, route.name, route.revision)

    def routes_changed(self, result: str, routes: Routes | None) -> None:
        self.route_reloads.labels(self.agent, result).inc()
        if routes is None:
            return
        self.route_info.clear()
        for stage in STAGES:
            route = routes.route(stage)
            if route is not None:
                self.route_info.labels(*self.stage_labels(stage, route)).set(1)
