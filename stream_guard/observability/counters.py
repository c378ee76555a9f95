"""The worker's counters of consumed records by outcome (logged in the ``stats`` line and at exit)."""

from __future__ import annotations

from dataclasses import dataclass


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
