"""The operator's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
ROLLBACKS = Counter(
    "voice_operator_rollbacks_total", "Automatic rollbacks, by component.", ["component"]
)
