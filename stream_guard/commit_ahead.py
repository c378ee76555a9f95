"""A batch's checkpoint committed on a thread of its own while the next batch is consumed and staged.

A batch's commit (:meth:`~stream_guard.checkpoint.Checkpoint.commit`) is mostly waiting: on
the broker for the dead letters' acknowledgements, on Redis for the fenced scripts and the
label joins. The worker's loop hands it to :class:`CommitAhead` and goes on polling and
staging the next batch meanwhile, at most one batch ahead. What keeps that safe:

* the commit thread writes only what the batch derived (dead letters, state, label joins);
  the consumer's offsets are stored by the loop once the commit returned
  (:meth:`CommitAhead.settle`), so an offset still moves only after everything before it
  is durable;
* the loop settles the batch in flight before the next batch's early alerts (published
  before their batch's commit), a rebalance (a revocation commits the offsets) and stopping;
  windows close meanwhile, as they do while another worker commits (a batch's scripts move
  its counters and watermarks together), and the producer they share tells each thread's
  deliveries apart (:class:`~stream_guard.kafka.DeliveryTracker`);
* a batch whose commit failed is rewound with every batch staged after it
  (:meth:`CommitAhead.failed_messages`): the fences make the retry idempotent, as they do
  for one batch.

``[kafka] delivery = "exactly_once"`` turns it off: a turn is one transaction there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["CommitAhead", "HasMessages"]


class HasMessages(Protocol):
    """A staged batch: the records a failed commit must be read again from."""

    @property
    def messages(self) -> Sequence[Any]: ...


_B = TypeVar("_B", bound=HasMessages)
_R = TypeVar("_R")


class CommitAhead(Generic[_B, _R]):
    """At most one batch's commit running on a thread; the results handed back in order."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: tuple[_B, Future[_R]] | None = None
        #: Batches whose commit raised (or whose settling did), not read again yet.
        self._failed: list[_B] = []
        self._settled = False

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    def start(self, batch: _B, commit: Callable[[], _R]) -> None:
        """Run ``commit`` on the commit thread; the previous batch must be settled."""
        if self._in_flight is not None:
            raise RuntimeError("a batch is already committing: settle it first")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-guard-commit")
        self._in_flight = (batch, self._executor.submit(commit))

    def settle(self) -> tuple[_B, _R] | None:
        """Wait for the batch in flight: ``(batch, result)``, or None if there was none.

        What its commit raised is raised here, the batch kept for :meth:`failed_messages`.
        """
        if self._in_flight is None:
            return None
        batch, future = self._in_flight
        self._in_flight = None
        try:
            result = future.result()
        except BaseException:
            self._failed.append(batch)
            raise
        self._settled = True
        return batch, result

    def settled_since(self) -> bool:
        """Whether a commit completed since the last call: what ends an outage (a batch merely
        staged, or a commit started, may still fail)."""
        settled, self._settled = self._settled, False
        return settled

    def failed(self, batch: _B) -> None:
        """Count ``batch`` as not committed (its settling failed after the commit returned)."""
        self._failed.append(batch)

    def failed_messages(self) -> list[Any]:
        """The records of every batch whose commit did not complete, to read again; forgets them."""
        failed, self._failed = self._failed, []
        return [message for batch in failed for message in batch.messages]

    def close(self) -> None:
        """Stop the thread (after settling: a batch still in flight is waited for)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
