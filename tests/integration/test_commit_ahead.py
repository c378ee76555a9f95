"""Commits ahead (``[worker] commit_ahead``): a batch commits on a thread while the next one is
staged; a commit that fails is read again with every batch staged after it, counted once."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from streamtest import new_worker, produce, run_until, window_totals, write_config

from stream_guard.state.window_store import StateUpdate
from stream_guard.tools.simulator import Simulator
from stream_guard.worker import Worker

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000


class _Staging:
    """Counts the polls the worker's loop staged, and those that held records."""

    def __init__(self) -> None:
        self.count = 0
        self.batches = 0
        self.changed = threading.Condition()

    def staged(self, batch: bool) -> None:
        with self.changed:
            self.count += 1
            self.batches += batch
            self.changed.notify_all()

    def wait_for_one_after(self, seen: tuple[int, int]) -> bool:
        """Whether the loop staged a batch after ``seen`` (its next poll; an empty one settles the
        batch in flight at once)."""
        with self.changed:
            self.changed.wait_for(lambda: self.count > seen[0], timeout=5)
            return self.batches > seen[1]


class _FailingState:
    """The worker's own state sink, failing its 3rd apply before it reaches Redis and the 3rd
    after that once it applied (a reply lost to the outage), as an outage would.

    With commits ahead, a failing call first waits for the loop's next poll to stage a batch,
    so that the failure meets the batch staged after it; if the loop settles it instead (an
    empty poll, a rebalance), a later call fails.
    """

    def __init__(self, inner: Any, staging: _Staging, ahead: bool) -> None:
        self._inner, self._staging, self._ahead = inner, staging, ahead
        self.calls = 0
        self.failures: list[int] = []
        self.failed_with_next_staged = 0

    def apply(self, updates: Mapping[str, Sequence[StateUpdate]], now_ms: int) -> Any:
        self.calls += 1
        seen = (self._staging.count, self._staging.batches)
        due = len(self.failures) < 2 and self.calls >= (self.failures[-1] if self.failures else 0) + 3
        if due and self._ahead:
            due = self._staging.wait_for_one_after(seen)
            self.failed_with_next_staged += due
        if due and not self.failures:
            self.failures.append(self.calls)
            raise redis.ConnectionError("injected: connection reset before the pipeline was sent")
        result = self._inner.apply(updates, now_ms)
        if due:
            self.failures.append(self.calls)
            raise redis.ConnectionError("injected: connection reset before the replies were read")
        return result


@pytest.mark.parametrize("ahead", [True, False], ids=["commit_ahead", "commit_in_line"])
def test_a_failed_commit_is_read_again_with_the_batch_staged_after_it(
    tmp_path: Path, bootstrap: str, redis_url: str, redis_client: redis.Redis, unique: str, ahead: bool
) -> None:
    config = write_config(tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, window_s=3600)
    config.worker.commit_ahead = ahead
    sim = Simulator(encoding="confluent", seed=5)
    n = produce(
        bootstrap,
        config.models[0].topics[0],
        ((r["event_id"].encode(), p, r["ts"]) for r, p, _ in sim.stream(3000, START_MS, step_ms=50)),
    )
    # No window closes while it runs: a close settles the batch in flight (and would wait for it here).
    worker: Worker = new_worker(config, close_interval_s=3600)
    staging = _Staging()
    stage = worker._stage

    def counted_stage(messages: Sequence[Any]) -> Any:
        out = stage(messages)
        staging.staged(out is not None)
        return out

    worker._stage = counted_stage  # type: ignore[method-assign]
    failing = _FailingState(worker.parts.sinks.state, staging, ahead)
    worker.parts.sinks = type(worker.parts.sinks)(
        worker.parts.sinks.dead_letters, failing, worker.parts.sinks.labels, worker.parts.sinks.offsets
    )
    worker._sinks_ahead = type(worker._sinks_ahead)(
        worker._sinks_ahead.dead_letters, failing, worker._sinks_ahead.labels, worker._sinks_ahead.offsets
    )
    run_until(
        [worker], lambda: worker.stats.decoded + worker.stats.redelivered_skipped >= n and len(failing.failures) == 2
    )

    assert worker.stats.retries == 2
    assert failing.failed_with_next_staged == (2 if ahead else 0), "with commits ahead, each failure met a staged batch"
    # The batch whose replies were lost had applied: read again, its fence skips it.
    assert 0 < worker.stats.redelivered_skipped <= config.worker.batch_size
    assert worker.stats.decoded + worker.stats.redelivered_skipped == n
    assert window_totals(redis_client, config)["n"] == n
    assert worker.stats.accounted == worker.stats.consumed
