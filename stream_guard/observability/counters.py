"""The worker's counters of consumed records by outcome (logged in the ``stats`` line and at exit)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream_guard.checkpoint import CommitResult
    from stream_guard.observability.metrics import WorkerMetrics


@dataclass
class WorkerStats:
    #: Records of the batches that completed; a failed batch, read again, counts when it completes.
    consumed: int = 0
    decoded: int = 0
    dead_lettered: int = 0
    redelivered_skipped: int = 0
    batches: int = 0
    alerts: int = 0
    retries: int = 0
    labels_matched: int = 0
    labels_unmatched: int = 0
    #: Labels read before their prediction was stored, held for it.
    labels_held: int = 0
    #: Held labels joined once their prediction arrived (not consumed records: held already counts them).
    labels_released: int = 0
    #: Held labels whose prediction did not arrive within ``[models.labels] hold_s``.
    labels_expired: int = 0
    #: Labels that decoded but lack an event id or a label value.
    labels_invalid: int = 0
    #: Labels of a redelivered batch, already applied.
    labels_skipped: int = 0

    @property
    def accounted(self) -> int:
        """Consumed records by outcome; equals ``consumed`` when nothing was lost."""
        return (
            self.decoded
            + self.dead_lettered
            + self.redelivered_skipped
            + self.labels_matched
            + self.labels_unmatched
            + self.labels_held
            + self.labels_invalid
            + self.labels_skipped
        )

    def count_commit(self, result: CommitResult, *, decoded: int, dead_lettered: int, dead_labels: int) -> None:
        """Count a committed batch: its decoded events, dead letters, label joins and releases."""
        for join in result.joins.values():
            self.labels_matched += join.matched
            self.labels_unmatched += join.unmatched
            self.labels_skipped += join.skipped
            self.labels_invalid += join.invalid
            self.labels_held += join.held
        for release in result.releases.values():
            self.labels_released += release.released
            self.labels_expired += release.expired
        # Undecodable labels are both dead letters and "invalid" to the joiner: count them once.
        self.labels_invalid -= dead_labels
        self.decoded += decoded
        self.dead_lettered += dead_lettered
        self.batches += 1


class StatsLine:
    """The ``stats`` log line: the counters and the consumer lag, every ``interval_s`` at most."""

    def __init__(self, interval_s: float, logger: Any) -> None:
        self._interval_s = interval_s
        self._log = logger
        self._last, self._consumed_then = time.monotonic(), 0

    def log(self, stats: WorkerStats, metrics: WorkerMetrics) -> None:
        now = time.monotonic()
        if now - self._last < self._interval_s:
            return
        elapsed = now - self._last
        consumed = stats.consumed - self._consumed_then
        self._last, self._consumed_then = now, stats.consumed
        lag = {
            f"{s.labels['topic']}:{s.labels['partition']}": int(s.value)
            for metric in metrics.lag.collect()
            for s in metric.samples
        }
        self._log.info("stats", records_per_s=round(consumed / elapsed, 1), lag=lag, **vars(stats))
