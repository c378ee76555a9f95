"""Waiting out an outage: capped exponential backoff, one log line when it starts and one when it ends.

Both lines carry ``state`` (``"outage"`` or ``"recovered"``), so a log query or an alert
rule finds every state change of every kind of outage without matching messages.
"""

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

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, log: Any, what: str, error: Exception | None = None) -> float:
        """Seconds to wait before the next attempt; the first failure of an outage logs ``what``."""
        if self.failures == 0:
            self.started = time.monotonic()
            detail = {} if error is None else {"error": str(error), "error_class": type(error).__name__}
            log.warning(f"{what}; retrying with backoff", state="outage", **detail)
        self.failures += 1
        return min(self.cap_s, self.first_s * 2.0 ** (self.failures - 1))

    def succeeded(self, log: Any, what: str) -> None:
        """The outage, if any, is over: logs ``what`` with its attempts and length."""
        if self.failures:
            outage_s = round(time.monotonic() - self.started, 1)
            log.info(what, state="recovered", attempts=self.failures, outage_s=outage_s)
        self.failures = 0
