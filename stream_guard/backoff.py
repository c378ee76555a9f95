"""Waiting out an outage: capped exponential backoff, one log line when it starts and one when it ends."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Backoff:
    """Capped exponential backoff for an outage, logged once when it starts and once when it ends."""

    first_s: float = 0.5
    cap_s: float = 30.0
    failures: int = 0
    started: float = 0.0

    def failed(self, log: Any, what: str, error: Exception) -> float:
        """Seconds to wait before the next attempt."""
        if self.failures == 0:
            self.started = time.monotonic()
            log.warning(f"{what}; retrying with backoff", error=str(error), error_class=type(error).__name__)
        self.failures += 1
        return min(self.cap_s, self.first_s * 2.0 ** (self.failures - 1))

    def succeeded(self, log: Any, what: str) -> None:
        if self.failures:
            log.info(what, attempts=self.failures, outage_s=round(time.monotonic() - self.started, 1))
        self.failures = 0
