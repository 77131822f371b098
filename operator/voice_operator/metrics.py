"""The operator's own Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram

from voice_operator.conditions import EventSpec

RECONCILES = Counter(
    "voice_operator_reconciles_total", "Reconciles run, by resource kind.", ["kind"]
)
RECONCILE_ERRORS = Counter(
    "voice_operator_reconcile_errors_total", "Reconciles that raised, by resource kind.", ["kind"]
)
RECONCILE_DURATION = Histogram(
    "voice_operator_reconcile_duration_seconds",
    "Time per reconcile, by resource kind.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DOWNLOADS = Counter(
    "voice_operator_downloads_total",
    "Model version downloads by outcome (started, ready, failed).",
    ["outcome"],
)
ROLLOUTS = Counter(
    "voice_operator_rollouts_total",
    "Component rollouts by outcome (started, succeeded, failed).",
    ["component", "outcome"],
)
APPLIES = Counter(
    "voice_operator_applies_total",
    "Children the operator meant to apply, by kind and result: written, or unchanged (the "
    "live object already was what it would write, so nothing was sent).",
    ["kind", "result"],
)
ROLLBACKS = Counter(
    "voice_operator_rollbacks_total", "Automatic rollbacks, by component.", ["component"]
)


# Events are recorded once per transition (status is what dedupes them), so counting them
# counts downloads and rollouts without a second source of truth.
_DOWNLOAD_OUTCOMES = {"Ready=True": "ready", "Failed=True": "failed"}
_ROLLOUT_OUTCOMES = {
    "RolloutStarted": "started",
    "RolloutSucceeded": "succeeded",
    "RolledBack": "failed",
    "RolloutFailed": "failed",
}


def count_events(kind: str, events: Iterable[EventSpec]) -> None:
    for event in events:
        if kind == "ModelAsset":
            if event.transition == "Downloading=True" and event.reason == "JobCreated":
                DOWNLOADS.labels("started").inc()
            elif outcome := _DOWNLOAD_OUTCOMES.get(event.transition):
                DOWNLOADS.labels(outcome).inc()
        elif kind == "VoiceAgent" and event.component:
            if outcome := _ROLLOUT_OUTCOMES.get(event.reason):
                ROLLOUTS.labels(event.component, outcome).inc()
            if event.reason == "RolledBack":
                ROLLBACKS.labels(event.component).inc()
