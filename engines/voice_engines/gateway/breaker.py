"""A circuit breaker per provider: after `failures` failures in a row the circuit opens
and calls fail at once (the stage falls back, or answers 503) instead of waiting on a
provider that is down; after `reset_s` one trial call is let through, and its outcome
closes or reopens the circuit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self.state: State = "closed"
        self.consecutive = 0
        self.opened_at = 0.0
        self._trial_running = False

    def retry_after(self) -> float:
        """Seconds until a trial call will be let through (0 when closed)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.opened_at + self.reset_s - self.clock())

    def allow(self) -> bool:
        if self.state == "open" and self.retry_after() == 0.0:
            self.state = "half_open"
        if self.state == "half_open":
            # One trial at a time; the others keep failing fast until it reports.
            if self._trial_running:
                return False
            self._trial_running = True
            return True
        return self.state == "closed"

    def success(self) -> None:
        self.state, self.consecutive, self._trial_running = "closed", 0, False

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == "half_open" or self.consecutive >= self.failures:
            self.state, self.opened_at, self._trial_running = "open", self.clock(), False

    def release(self) -> None:
        """The call ended without a verdict (e.g. the client went away mid-stream)."""
        self._trial_running = False
