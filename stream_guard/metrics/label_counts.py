"""What became of a range's labels: matched, held, released, expired, unmatched (``stream-guard metrics``).

Read from the all-traffic (``*``) counters of a :class:`~stream_guard.metrics.query.Rollup`
(see :mod:`stream_guard.metrics.store`). Held, expired and unmatched labels count in the
bucket of the *label's* time, matched and released ones in the bucket of the *prediction's*,
so over a short range the figures need not add up; over the whole lookback they do:
``held = released + expired + still held``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from stream_guard.metrics import store as s

if TYPE_CHECKING:
    from stream_guard.metrics.query import Rollup


@dataclass(frozen=True)
class LabelCounts:
    """The label counters of a range, all traffic."""

    #: Labels joined to their prediction (released ones included).
    matched: int
    #: Labels held because their prediction was not stored yet.
    held: int
    #: Held labels joined when their prediction arrived.
    released: int
    #: Held labels whose prediction never came within ``hold_s``.
    expired: int
    #: Labels without a prediction that were not held.
    unmatched: int
    #: Predictions stored and not labelled yet.
    pending: int

    @classmethod
    def of(cls, rollup: Rollup) -> LabelCounts:
        overall = rollup.overall

        def count(metric: str) -> int:
            return int(overall.get(metric))

        return cls(
            matched=overall.labelled,
            held=count(s.HELD),
            released=count(s.RELEASED),
            expired=count(s.EXPIRED),
            unmatched=overall.labels_unmatched,
            pending=overall.labels_pending,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def line(self) -> str:
        """One line for the metrics table."""
        return (
            f"labels: {self.matched} matched ({self.released} after a hold), {self.held} held, "
            f"{self.expired} expired, {self.unmatched} unmatched, {self.pending} predictions pending"
        )
